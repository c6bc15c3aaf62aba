"""OpenAI's wire format without a server: request bodies become our settings or errors naming the field, and a
generation's records become OpenAI's responses and chunks (apps/inference/openai.py)."""

import json
import math

import pytest

from apps.inference import openai
from apps.inference.services import InferenceError

RECORDS = [  # two tokens as the worker records them: text, probability, alternatives (id, text, p), then eos
    {"t": "Hi", "rp": 0.5, "ralt": [[1, "Hi", 0.5], [2, "Ho", 0.25]]},
    {"t": "!", "rp": 1.0, "ralt": [[3, "!", 1.0]]},
    {"t": "", "eos": True, "rp": 0.9},
]
FINAL = {"text": "Hi!", "stop_reason": "eos", "prompt_tokens": 4, "seed": 7}
META = {"id": "cmpl-x", "created": 1, "model": "m"}


def test_a_body_that_is_not_a_json_object_is_refused():
    for raw, words in [(b"{", "not valid JSON"), (b"[1]", "JSON object"), (b"x" * (openai.MAX_BODY_BYTES + 1), "KB")]:
        with pytest.raises(InferenceError, match=words):
            openai.json_body(raw)
    assert openai.json_body(b'{"model": "m"}') == {"model": "m"}


def test_a_lone_surrogate_is_refused_as_not_unicode():
    with pytest.raises(InferenceError) as e:
        openai.json_body(b'{"prompt": "\\ud800"}')
    assert e.value.code == "invalid_unicode"


@pytest.mark.parametrize("body,param", [
    ({"n": 2}, "n"), ({"best_of": 3}, "best_of"), ({"echo": True}, "echo"), ({"suffix": "x"}, "suffix"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"tools": [{}]}, "tools"),
])
def test_unsupported_options_are_named(body, param):
    with pytest.raises(InferenceError) as e:
        openai.unsupported_check(body)
    assert e.value.param == param


def test_completion_params_take_openais_names_and_defaults():
    params, top = openai.params_from({"max_tokens": 5, "temperature": 0, "stop": ["\n"], "logprobs": 3}, chat=False)
    assert params["max_new_tokens"] == 5 and params["temperature"] == 0 and params["stop"] == ["\n"]
    assert top == 3 and params["n_alternatives"] == 8
    params, top = openai.params_from({}, chat=False)
    assert params["max_new_tokens"] == 16 and top is None


def test_chat_logprobs_need_logprobs_true_and_a_small_whole_number():
    assert openai.params_from({"logprobs": True, "top_logprobs": 20}, chat=True)[1] == 20
    assert openai.params_from({"logprobs": True}, chat=True)[1] == 0
    for body in ({"top_logprobs": 2}, {"logprobs": True, "top_logprobs": 21}, {"logprobs": True, "top_logprobs": 1.5}):
        with pytest.raises(InferenceError) as e:
            openai.params_from(body, chat=True)
        assert e.value.param == "top_logprobs"


def test_a_bad_max_tokens_is_reported_under_the_name_the_client_sent():
    with pytest.raises(InferenceError) as e:
        openai.params_from({"max_completion_tokens": 0}, chat=True)
    assert e.value.param == "max_completion_tokens" and "max_completion_tokens" in str(e.value)
    with pytest.raises(InferenceError) as e:
        openai.params_from({"max_tokens": 0}, chat=False)
    assert e.value.param == "max_tokens" and "max_new_tokens" not in str(e.value)


def test_messages_accept_text_parts_and_the_developer_role():
    body = {"messages": [{"role": "developer", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert openai.messages_from(body) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]
    for bad in ([], [1], [{"role": "tool", "content": "x"}], [{"role": "user", "content": [{"type": "image"}]}]):
        with pytest.raises(InferenceError) as e:
            openai.messages_from({"messages": bad})
        assert e.value.param == "messages"


def test_a_prompt_is_one_string():
    assert openai.prompt_from({"prompt": ["once"]}) == "once"
    for bad in (["a", "b"], 3, None):
        with pytest.raises(InferenceError):
            openai.prompt_from({"prompt": bad})


def test_stream_and_stream_options_must_be_booleans_in_an_object():
    assert openai.stream_from({}) is False and openai.include_usage_from({}) is False
    assert openai.include_usage_from({"stream_options": {"include_usage": True}}) is True
    for fn, body in ((openai.stream_from, {"stream": "yes"}), (openai.include_usage_from, {"stream_options": 1}),
                     (openai.include_usage_from, {"stream_options": {"include_usage": 1}})):
        with pytest.raises(InferenceError):
            fn(body)
    with pytest.raises(InferenceError, match="GET /v1/models"):
        openai.model_from({})


def test_errors_have_openais_shape_and_type_for_the_status():
    assert openai.error_body("slow down", status=429, code="rate_limited") == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limited"}}
    assert openai.error_body("x", status=418)["error"]["type"] == "invalid_request_error"


def test_a_chat_response_has_the_message_logprobs_usage_and_finish_reason():
    body = openai.response(META, FINAL, RECORDS, chat=True, top=1)
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and choice["message"] == {"role": "assistant", "content": "Hi!"}
    assert choice["finish_reason"] == "stop" and body["system_fingerprint"] == "seed-7"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    first, second = choice["logprobs"]["content"]  # the eos record is not a token of the text
    assert first["token"] == "Hi" and first["logprob"] == pytest.approx(math.log(0.5))
    assert first["top_logprobs"] == [{"token": "Hi", "logprob": pytest.approx(math.log(0.5)), "bytes": [72, 105]}]
    assert second["logprob"] == 0.0


def test_a_completion_response_has_text_offsets_and_no_logprobs_unless_asked():
    body = openai.response(META, {**FINAL, "stop_reason": "length"}, RECORDS, chat=False, top=2)
    lp = body["choices"][0]["logprobs"]
    assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] == "length"
    assert lp["tokens"] == ["Hi", "!"] and lp["text_offset"] == [0, 2]
    assert lp["top_logprobs"][0] == {"Hi": pytest.approx(math.log(0.5)), "Ho": pytest.approx(math.log(0.25))}
    assert openai.response(META, FINAL, RECORDS, chat=False, top=None)["choices"][0]["logprobs"] is None


def test_a_probability_that_underflowed_gets_a_finite_logprob():
    assert openai.logprob(0.0) == openai.NEVER and openai.logprob(None) == openai.NEVER


def test_chunks_carry_the_role_first_then_deltas_then_the_finish_reason():
    kw = {"chat": True, "top": None, "include_usage": True}
    assert openai.chunk(META, "", role=True, **kw)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    middle = openai.chunk(META, "Hi", RECORDS[:1], **kw)
    assert middle["choices"][0]["delta"] == {"content": "Hi"} and middle["usage"] is None
    last = openai.chunk(META, "", finish="stop", **kw)
    assert last["choices"][0] == {"index": 0, "finish_reason": "stop", "delta": {}, "logprobs": None}
    usage = openai.usage_chunk(META, FINAL, RECORDS, chat=True)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7
    completion = openai.chunk(META, "!", RECORDS[1:2], chat=False, top=1, include_usage=False, start=2)
    assert completion["choices"][0]["logprobs"]["text_offset"] == [2] and "usage" not in completion


def test_sse_frames_a_json_object_as_one_event():
    frame = openai.sse({"a": 1})
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n") and json.loads(frame[6:]) == {"a": 1}


def test_a_result_holds_back_text_that_may_start_a_stop_string():
    result = openai.Result(["END"])
    assert result.add({"offset": 0, "tokens": [{"t": "ab"}, {"t": "E"}]}) == [{"t": "ab"}, {"t": "E"}]
    assert result.safe_text() == "ab"  # "E" may be the start of "END"
    result.add({"offset": 2, "tokens": [{"t": "x"}]})
    assert result.safe_text() == "Ex"
    assert result.rest_text({"text": "abExyz"}) == "yz" and result.emitted == 6


def test_a_result_stops_taking_tokens_after_a_missed_batch():
    result = openai.Result([])
    result.add({"offset": 0, "tokens": [{"t": "a"}]})
    assert result.add({"offset": 3, "tokens": [{"t": "d"}]}) == [] and result.gap
    assert result.add({"offset": 1, "tokens": [{"t": "b"}]}) == [] and result.records == [{"t": "a"}]
    overlap = openai.Result([])
    overlap.add({"offset": 0, "tokens": [{"t": "a"}, {"t": "b"}]})
    assert overlap.add({"offset": 1, "tokens": [{"t": "b"}, {"t": "c"}]}) == [{"t": "c"}]  # a resent batch
