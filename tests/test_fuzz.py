"""Wrong input never gets a 500 or a crashed socket: every JSON API field and every websocket action is sent numbers,
lists, null, nested objects, huge integers, bad Unicode and missing fields, and each answer must be a 4xx JSON error
(or, for a websocket, an error event on a socket that stays open). The named cases at the top are the ones found by
hand (issue 10); the sweep below is the rest of the family.

The API calls run in-process (Django's test client raises any exception a view lets escape, so a 500 cannot hide);
no worker runs, so a request that passes validation waits INFERENCE_QUEUE_TIMEOUT (set tiny) and gets its 503."""

import json

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User
from django.test import Client

from apps.inference.consumers import GenerateConsumer
from apps.inference.models import ApiToken, Generation
from tests.apps.registry.factories import make_model
from tests.conftest import run_async
from tests.data_fixtures import builtins, tiny_corpus, user  # noqa: F401  (fixtures)
from tests.training_fixtures import char_tok  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

SURROGATE = "\ud800"
# Values of the wrong type or shape, as JSON text (some cannot be made by json.dumps: a lone surrogate, NaN, a
# 5000-digit number).
WRONG = ["0", "-1", "1.5", "true", "null", '""', "[]", "[1, 2]", "{}", '{"a": {"b": [null, {}]}}', "1e999", "NaN",
         str(10**400), "1" + "0" * 5000, '"\\ud800"', '["\\udfff"]', '{"\\ud800": 1}', '"' + "x" * 300_000 + '"']


@pytest.fixture(autouse=True)
def quick(settings):
    settings.INFERENCE_QUEUE_TIMEOUT = 0.05  # nothing takes a request here: do not wait a minute for that 503
    settings.INFERENCE_ANON_PER_MINUTE = 10**6  # the sweep sends hundreds of requests from one address


@pytest.fixture
def tiny(tmp_path):
    return make_model(tmp_path, name="Tiny")


def post(path: str, raw: str | bytes, client: Client | None = None):
    from channels.layers import channel_layers

    # the test client runs each async view on a new event loop; a real server has one. channels-redis keeps
    # loop-bound locks, so each request here gets a fresh layer, as each would in its own server process.
    channel_layers.backends.clear()
    client = client or Client()
    response = client.post(path, data=raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw,
                           content_type="application/json")
    return response


def assert_refused_as_json(response, what: str):
    assert response.status_code != 500, what
    assert response["Content-Type"].startswith("application/json"), (what, response.status_code)
    body = json.loads(response.content)
    if response.status_code >= 400:
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        assert isinstance(message, str) and message, (what, body)
    return body


def with_field(base: dict, field: str, raw_value: str) -> str:
    """base as JSON text with `field` set to a raw JSON value (a path a.b sets a nested one)."""
    text = json.dumps(base)
    marker = '"__FUZZ__"'
    doc = json.loads(text)
    node = doc
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p] if isinstance(node.get(p), dict) else node.setdefault(p, {})
    node[leaf] = "__FUZZ__"
    return json.dumps(doc).replace(marker, raw_value)


# ----------------------------------------------------------------------------------------------------------------------
# the cases found by hand


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("field", ["prompt", "model"])
def test_a_lone_surrogate_in_the_api_is_a_400_that_names_it(tiny, path, field):
    body = {"model": tiny.slug, "prompt": "First", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    if field == "prompt" and path.endswith("chat/completions"):
        raw = with_field(body, "messages", '[{"role": "user", "content": "\\ud800"}]')
    else:
        raw = with_field(body, field, '"\\ud800"')
    response = post(path, raw)
    assert response.status_code == 400
    assert "surrogate" in assert_refused_as_json(response, raw[:80])["error"]["message"]
    assert not Generation.objects.exists()


@pytest.mark.parametrize("options", ["5", "[]", '"yes"', '{"include_usage": "maybe"}'])
def test_stream_options_of_the_wrong_type_is_a_400(tiny, options):
    raw = with_field({"model": tiny.slug, "prompt": "First", "stream": True}, "stream_options", options)
    response = post("/v1/completions", raw)
    assert response.status_code == 400
    assert assert_refused_as_json(response, options)["error"]["param"] == "stream_options"
    assert not Generation.objects.exists()


def test_revoking_a_token_needs_a_login_and_changes_nothing_without_one():
    owner = User.objects.create_user("owner", password="pw-owner-123")
    token = ApiToken.objects.create(user=owner, name="laptop", key_hash="x" * 64, prefix="lab-abc")
    response = Client().post(f"/generate/api/tokens/{token.pk}/revoke/")
    assert response.status_code == 302 and "/login" in response["Location"]
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_a_handshake_to_an_unrouted_websocket_path_is_refused_quietly(caplog):
    from config.asgi import application

    async def scenario():
        ws = WebsocketCommunicator(application, "/ws/no-such-thing/", headers=[(b"origin", b"http://localhost")])
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    assert run_async(scenario()) is False
    assert "Traceback" not in caplog.text and "No route found" not in caplog.text


# ----------------------------------------------------------------------------------------------------------------------
# the sweep: JSON APIs


def test_the_tokenize_apis_answer_every_wrong_field_with_a_json_4xx(builtins):
    apis = {"/api/tokenize": {"text": "hello", "tokenizer": "gpt2", "allow_special": False},
            "/api/detokenize": {"ids": [31373], "tokenizer": "gpt2"}}
    for path, base in apis.items():
        for raw in WRONG:
            response = post(path, raw)
            assert response.status_code in (400, 413), (path, raw[:40], response.status_code)
            assert_refused_as_json(response, f"{path} {raw[:40]}")
            for field in base:
                response = post(path, with_field(base, field, raw))
                assert_refused_as_json(response, f"{path} {field}={raw[:40]}")
            for field in base:
                response = post(path, json.dumps({k: v for k, v in base.items() if k != field}))
                assert_refused_as_json(response, f"{path} without {field}")


V1_FIELDS = ["model", "prompt", "messages", "messages.0", "max_tokens", "max_completion_tokens", "temperature", "top_p",
             "top_k", "min_p", "repetition_penalty", "stop", "seed", "stream", "stream_options",
             "stream_options.include_usage", "logprobs", "top_logprobs", "n", "best_of", "echo", "suffix",
             "presence_penalty", "frequency_penalty", "tools", "user"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_the_v1_apis_answer_every_wrong_field_with_a_json_error(tiny, path):
    base = {"model": tiny.slug, "prompt": "First", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
            "stream_options": {"include_usage": True}}
    for raw in WRONG:
        response = post(path, raw)
        assert 400 <= response.status_code < 500, (raw[:40], response.status_code)
        assert_refused_as_json(response, raw[:40])
        for field in V1_FIELDS:
            body = dict(base, stream=True) if field.startswith("stream_options") else base
            if field == "messages.0":
                text = with_field(body, "messages", f"[{raw}]")
            else:
                text = with_field(body, field, raw)
            response = post(path, text)
            if response.status_code == 200:  # accepted and streaming: an event stream, not JSON
                continue
            assert_refused_as_json(response, f"{path} {field}={raw[:40]}")
    for field in ("model", "prompt", "messages"):
        response = post(path, json.dumps({k: v for k, v in base.items() if k != field}))
        assert_refused_as_json(response, f"{path} without {field}")


# ----------------------------------------------------------------------------------------------------------------------
# the sweep: websocket actions


def socket_session(consumer, path: str, messages: list, *, scope: dict | None = None, connect_reply: bool = False):
    """Send each raw text message; return the replies. Fails if the socket closes (1011 is a crash) or a reply says the
    server could not handle a message (the consumer's last line of defence, which means a bug)."""

    async def scenario():
        ws = WebsocketCommunicator(consumer, path)
        ws.scope.update({"user": AnonymousUser(), "client": ["10.0.0.9", 1]} | (scope or {}))
        connected, code = await ws.connect()
        assert connected, code
        if connect_reply:
            await ws.receive_from(timeout=5)
        replies = []
        for raw in messages:
            await ws.send_to(text_data=raw)
            output = await ws.receive_output(timeout=10)
            assert output["type"] == "websocket.send", (raw[:60], output)
            replies.append(json.loads(output["text"]))
            assert "could not handle" not in json.dumps(replies[-1]), (raw[:60], replies[-1])
        await ws.disconnect()
        return replies

    return run_async(scenario())


def inference_messages(model_slug: str) -> list[str]:
    base = {"action": "generate", "panel": "a", "model": model_slug, "mode": "completion", "prompt": "First",
            "params": {"max_new_tokens": 2}}
    out = list(WRONG)
    fields = ["action", "panel", "model", "mode", "prompt", "messages", "params", "params.temperature",
              "params.max_new_tokens", "params.stop", "params.seed", "params.top_k"]
    for raw in WRONG:
        for field in fields:
            out.append(with_field(base, field, raw))
        for action in ("branch", "stop"):
            for field in ("generation", "index", "token"):
                out.append(with_field({"action": action, "generation": "0" * 32, "index": 0, "token": 1}, field, raw))
    return out


def test_the_inference_socket_answers_every_wrong_message_with_an_error_event_and_stays_open(tiny, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks.completion_stream, "delay", lambda gid: None)  # nothing runs them: see the module doc
    monkeypatch.setattr("apps.inference.consumers.MAX_RUNNING", 10**6)
    messages = inference_messages(tiny.slug)
    replies = socket_session(GenerateConsumer.as_asgi(), "/ws/inference/", messages)
    assert len(replies) == len(messages)
    assert all(r["type"] in ("error", "created") for r in replies)
    errors = [r for r in replies if r["type"] == "error"]
    assert all(isinstance(r["message"], str) and r["message"] for r in errors)


def test_a_lone_surrogate_on_the_inference_socket_fails_that_request_and_keeps_the_others(tiny, monkeypatch):
    from workers import tasks

    queued = []
    monkeypatch.setattr(tasks.completion_stream, "delay", lambda gid: queued.append(gid))
    good = {"action": "generate", "panel": "a", "model": tiny.slug, "mode": "completion", "prompt": "First"}
    bad = json.dumps(dict(good, panel="b")).replace('"First"', '"\\ud800"')
    replies = socket_session(GenerateConsumer.as_asgi(), "/ws/inference/", [json.dumps(good), bad, json.dumps(good)])
    assert [r["type"] for r in replies] == ["created", "error", "created"]
    assert replies[1]["panel"] == "b" and "surrogate" in replies[1]["message"]
    assert Generation.objects.count() == 2 and len(queued) == 2


def test_the_training_socket_answers_every_wrong_message_with_an_error_event(user, tiny_corpus, char_tok):
    from apps.training.consumers import RunConsumer
    from tests.training_fixtures import make_run

    run = make_run(user, tiny_corpus, char_tok)
    base = {"type": "since", "step": -1, "eval": -1, "epoch": 0}
    messages = list(WRONG) + [with_field(base, f, raw) for raw in WRONG for f in base]
    path = f"/ws/training/runs/{run.pk}/"
    replies = socket_session(RunConsumer.as_asgi(), path, messages, 
                             scope={"user": user, "url_route": {"args": (), "kwargs": {"run_id": run.pk}}})
    assert len(replies) == len(messages)


def send_only_socket_survives(consumer, path: str, *, user, kwargs: dict, skip_first: bool) -> list:
    """The sockets that only send (a trace's progress, a corpus's jobs): every wrong message leaves them open, with
    at most a notice in reply."""

    async def scenario():
        ws = WebsocketCommunicator(consumer, path)
        ws.scope.update({"user": user, "client": ["10.0.0.9", 1], "url_route": {"args": (), "kwargs": kwargs}})
        connected, code = await ws.connect()
        assert connected, code
        if skip_first:
            await ws.receive_output(timeout=5)  # the state on connecting
        outputs = []
        for raw in WRONG + ['{"action": "generate"}', '{"type": "since"}']:
            await ws.send_to(text_data=raw)
            if not await ws.receive_nothing(timeout=0.05):
                output = await ws.receive_output(timeout=5)
                assert output["type"] == "websocket.send", (raw[:60], output)
                outputs.append(output)
        await ws.send_to(bytes_data=b"\xff\xfe not text")
        assert await ws.receive_nothing(timeout=0.2) or (await ws.receive_output())["type"] == "websocket.send"
        await ws.disconnect()
        return outputs

    return run_async(scenario())


def test_the_explorer_and_corpora_sockets_stay_open_whatever_they_are_sent(user, tiny_corpus, monkeypatch):
    from apps.corpora.consumers import CorpusConsumer
    from apps.explorer import services as explorer_services
    from apps.explorer.consumers import TraceConsumer
    from tests.apps.explorer.factories import char_tokenizer, tiny_run

    _, checkpoints = tiny_run(owner=user, tokenizer=char_tokenizer())
    monkeypatch.setattr(explorer_services, "_enqueue", lambda trace: None)
    trace = explorer_services.trace_request(ref=f"checkpoint:{checkpoints[-1].pk}", text="ROMEO", user=user,
                                            client="10.0.0.9")
    notices = send_only_socket_survives(TraceConsumer.as_asgi(), f"/ws/explorer/traces/{trace.key}/", user=user,
                                        kwargs={"key": trace.key}, skip_first=True)
    assert notices and all("ignored" in o["text"] for o in notices)
    send_only_socket_survives(CorpusConsumer.as_asgi(), f"/ws/corpora/corpus/{tiny_corpus.pk}/", user=user,
                              kwargs={"corpus_id": tiny_corpus.pk}, skip_first=False)
