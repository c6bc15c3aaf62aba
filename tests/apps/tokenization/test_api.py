"""POST /api/tokenize and /api/detokenize, GET /api/tokenizers: results equal tiktoken's, every bad request is a
4xx with a JSON message, anonymous callers are rate-limited."""

import json

import pytest
from django.test import override_settings

from workers.gpt import tokenizers as toklib

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_clean")]


def post(client, path, body, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **extra)


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_tokenize_equals_tiktoken(client, builtins, name):
    text = "Hello, world! 你好 🦙 <|endoftext|>"
    response = post(client, "/api/tokenize", {"text": text, "tokenizer": name})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    enc = toklib.get_builtin(name)
    assert body["tokenizer"] == name and body["count"] == len(enc.encode(text))
    assert [t["id"] for t in body["tokens"]] == enc.encode(text)
    assert b"".join(bytes(t["bytes"]) for t in body["tokens"]) == text.encode()
    assert body["tokens"][0] == {"id": enc.encode("Hello")[0], "text": "Hello", "bytes": list(b"Hello")}


def test_special_tokens_are_plain_text_unless_allowed(client, builtins):
    plain = post(client, "/api/tokenize", {"text": "<|endoftext|>", "tokenizer": "gpt2"}).json()
    special = post(client, "/api/tokenize", {"text": "<|endoftext|>", "tokenizer": "gpt2", "allow_special": True}).json()
    assert plain["count"] > 1 and 50256 not in [t["id"] for t in plain["tokens"]]
    assert special["tokens"] == [{"id": 50256, "text": "<|endoftext|>", "bytes": list(b"<|endoftext|>")}]


def test_a_trailing_slash_works_too(client, builtins):
    assert post(client, "/api/tokenize/", {"text": "a", "tokenizer": "gpt2"}).json()["count"] == 1


def test_detokenize_round_trips_and_flags_cut_characters(client, builtins):
    ids = toklib.get_builtin("gpt2").encode("你好 there")
    body = post(client, "/api/detokenize", {"ids": ids, "tokenizer": "gpt2"}).json()
    assert body["text"] == "你好 there" and body["valid_utf8"] and body["count"] == len(ids)
    assert [t["id"] for t in body["tokens"]] == ids
    cut = post(client, "/api/detokenize", {"ids": ids[:1], "tokenizer": "gpt2"}).json()
    assert cut["valid_utf8"] is False and cut["text"] == "\ufffd" and cut["tokens"][0]["bytes"] == [0xE4, 0xBD]


def test_a_character_tokenizer_and_a_trained_bpe_work_through_the_api(client, tiny_bpe, tiny_corpus):
    from apps.tokenization.services import tokenizer_char_create

    tokenizer_char_create(corpus=tiny_corpus, name="tiny-char", user=tiny_corpus.owner)
    client.force_login(tiny_corpus.owner)
    chars = post(client, "/api/tokenize", {"text": "All", "tokenizer": "tiny-char"}).json()
    assert chars["count"] == 3 and [t["text"] for t in chars["tokens"]] == ["A", "l", "l"]
    bpe = post(client, "/api/tokenize", {"text": "First Citizen", "tokenizer": "tiny-bpe"}).json()
    assert bpe["count"] < len("First Citizen")
    missing = post(client, "/api/tokenize", {"text": "Zebra ü", "tokenizer": "tiny-char"})
    assert missing.status_code == 400 and "not in the vocabulary" in missing.json()["error"]


@pytest.mark.parametrize("body, status, message", [
    ({"text": "hi", "tokenizer": "gpt5"}, 400, "unknown tokenizer 'gpt5': choose one of gpt2, r50k_base"),
    ({"text": "hi"}, 400, '"tokenizer" is required'),
    ({"tokenizer": "gpt2"}, 400, '"text" is required and must be a string'),
    ({"text": 42, "tokenizer": "gpt2"}, 400, '"text" is required and must be a string'),
    ({"text": "hi", "tokenizer": "gpt2", "allow_special": "yes"}, 400, '"allow_special" must be true or false'),
    ("{not json", 400, "the body is not valid JSON"),
    ("[1, 2]", 400, "the body must be a JSON object"),
    ("", 400, "the body must be a JSON object"),
])
def test_bad_tokenize_requests_say_what_to_send(client, builtins, body, status, message):
    response = post(client, "/api/tokenize", body)
    assert response.status_code == status
    assert message in response.json()["error"]


@override_settings(TOKENIZE_MAX_BYTES=100)
def test_text_over_the_limit_is_413(client, builtins):
    response = post(client, "/api/tokenize", {"text": "x" * 101, "tokenizer": "gpt2"})
    assert response.status_code == 413
    assert "The text is 101 bytes" in response.json()["error"] and "at most 100 bytes" in response.json()["error"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_body_over_the_request_limit_is_413(client, builtins):
    response = post(client, "/api/tokenize", {"text": "x" * 5000, "tokenizer": "gpt2"})
    assert response.status_code == 413 and "over the size limit" in response.json()["error"]


@pytest.mark.parametrize("body, message", [
    ({"ids": [15496, 50257], "tokenizer": "gpt2"}, "id 50257 (item 2) is out of range: gpt2 has ids 0..50256"),
    ({"ids": [-1], "tokenizer": "gpt2"}, "id -1 (item 1) is out of range"),
    ({"ids": [100256], "tokenizer": "cl100k_base"}, "id 100256 is not a token of cl100k_base"),
    ({"ids": "15496", "tokenizer": "gpt2"}, '"ids" is required: a list of integer token ids'),
    ({"ids": [1.5], "tokenizer": "gpt2"}, '"ids" is required: a list of integer token ids'),
    ({"ids": [True], "tokenizer": "gpt2"}, '"ids" is required: a list of integer token ids'),
    ({"ids": [1], "tokenizer": "nope"}, "unknown tokenizer 'nope'"),
])
def test_bad_detokenize_requests_name_the_problem(client, builtins, body, message):
    response = post(client, "/api/detokenize", body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_the_wrong_method_is_405(client, builtins):
    response = client.get("/api/tokenize")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert "use POST" in response.json()["error"]
    assert client.post("/api/tokenizers").status_code == 405


def test_tokenizers_lists_what_may_be_used(client, builtins, tiny_bpe):
    names = [t["name"] for t in client.get("/api/tokenizers").json()["tokenizers"]]
    assert names == ["gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base"]  # tiny-bpe is its owner's
    client.force_login(tiny_bpe.owner)
    listed = {t["name"]: t for t in client.get("/api/tokenizers").json()["tokenizers"]}
    assert listed["tiny-bpe"]["kind"] == "bpe" and listed["tiny-bpe"]["special_tokens"] == ["<|endoftext|>"]
    assert listed["o200k_base"]["n_vocab"] == 200019


def test_someone_elses_tokenizer_is_unknown(client, tiny_bpe, other_user):
    client.force_login(other_user)
    response = post(client, "/api/tokenize", {"text": "a", "tokenizer": "tiny-bpe"})
    assert response.status_code == 400 and "unknown tokenizer 'tiny-bpe'" in response.json()["error"]


@override_settings(TOKENIZE_ANON_PER_MINUTE=3)
def test_anonymous_callers_are_rate_limited_and_signed_in_ones_are_not(client, builtins, user, monkeypatch):
    monkeypatch.setattr("apps.system.limits._now", lambda: 1_000_000_020.0)  # mid-window: no rollover
    for _ in range(3):
        assert post(client, "/api/tokenize", {"text": "a", "tokenizer": "gpt2"}).status_code == 200
    limited = post(client, "/api/tokenize", {"text": "a", "tokenizer": "gpt2"})
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 61 and "sign in to lift the limit" in limited.json()["error"]
    # another address has its own budget
    assert post(client, "/api/tokenize", {"text": "a", "tokenizer": "gpt2"}, REMOTE_ADDR="10.0.0.2").status_code == 200
    client.force_login(user)
    for _ in range(5):
        assert post(client, "/api/tokenize", {"text": "a", "tokenizer": "gpt2"}).status_code == 200


@override_settings(TOKENIZE_ANON_PER_MINUTE=1)
def test_while_redis_is_down_anonymous_callers_get_a_503_with_retry_after_and_signed_in_ones_are_served(
        client, builtins, user, monkeypatch):
    from apps.system import limits

    def down(**kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(limits, "redis_client", down)
    refused = post(client, "/api/tokenize", {"text": "a", "tokenizer": "gpt2"})
    assert refused.status_code == 503 and refused["Retry-After"] == str(limits.UNAVAILABLE_RETRY_SECONDS)
    assert "cannot check its rate limit" in refused.json()["error"]
    client.force_login(user)  # not limited, so not refused either
    assert post(client, "/api/tokenize", {"text": "a", "tokenizer": "gpt2"}).status_code == 200