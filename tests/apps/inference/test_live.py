"""The whole path with real processes: a websocket or an HTTP client ⇄ daphne (Channels) ⇄ Redis ⇄ a real Celery
infer worker running the model. One daphne and one worker serve the whole module (starting them is the slow part)."""

import asyncio
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest
import websockets
from django.contrib.auth.models import User

from apps.inference.models import Generation
from apps.inference.services import api_token_create
from apps.registry.models import Model
from tests.apps.registry.factories import make_model
from tests.conftest import Processes, run_async, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def live(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    """(base URL, worker process): daphne and an infer worker, for the module."""
    procs = Processes(tmp_path_factory.mktemp("live"))
    try:
        with django_db_blocker.unblock():
            url = procs.asgi_server()
            worker = procs.worker("infer", "infer@live")
        yield url, worker
    finally:
        procs.stop_all()


@pytest.fixture(autouse=True)
def fresh_rate_limits(redis_url):
    """Every request here comes from 127.0.0.1: each test starts with a fresh anonymous budget."""
    from apps.system.redisconn import redis_client

    client = redis_client()
    for key in client.scan_iter(match="lab:limit:*"):
        client.delete(key)


@pytest.fixture
def tiny(tmp_path):
    return make_model(tmp_path, name="Tiny", n_embd=64, ctx=64)


@pytest.fixture
def endless(tiny):
    """The tiny model with no end-of-text token: it runs until max_new_tokens (or until it is stopped)."""
    tiny.stop_ids = []
    tiny.save(update_fields=["stop_ids"])
    return tiny


def ws_url(url):
    return url.replace("http", "ws") + "/ws/inference/"


def generate_message(model_row, panel="a", **params):
    return {"action": "generate", "panel": panel, "model": model_row.slug, "mode": "completion", "prompt": "First",
            "params": {"seed": 1, **params}}


async def until_final(ws, uid, *, timeout=60, on_tokens=None):
    """Events of one generation until its final state: (token records in order, final event, token events seen)."""
    records, batches = [], 0
    deadline = time.monotonic() + timeout
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if m.get("generation") != uid:
            continue
        if m["type"] == "tokens":
            batches += 1
            assert m["offset"] <= len(records)
            records.extend(m["tokens"][len(records) - m["offset"]:])
            if on_tokens is not None:
                await on_tokens(records)
        elif m["type"] == "state" and m["status"] in ("done", "failed", "stopped"):
            return records, m, batches


def test_tokens_stream_over_a_real_websocket_from_a_real_worker(live, tiny):
    url, _ = live

    async def scenario():
        async with websockets.connect(ws_url(url), origin=url) as ws:
            await ws.send(json.dumps(generate_message(tiny, max_new_tokens=300, temperature=0.9)))
            created = json.loads(await ws.recv())
            assert created["type"] == "created"
            return await until_final(ws, created["generation"])

    records, final, batches = run_async(scenario())
    gen = Generation.objects.get()
    assert final["status"] == "done", gen.error
    assert final["n_tokens"] == len(records) == gen.n_tokens
    assert [r["id"] for r in records] == [t["id"] for t in gen.tokens]
    assert batches > 1, "tokens arrive in several batches while the worker generates, not all at the end"
    assert gen.worker == "infer@live" and gen.stats["tokens_per_s"] > 0


def test_stop_ends_a_long_generation_at_once_and_the_worker_takes_the_next(live, endless):
    url, _ = live

    async def scenario():
        async with websockets.connect(ws_url(url), origin=url) as ws:
            await ws.send(json.dumps(generate_message(endless, max_new_tokens=2000)))
            uid = json.loads(await ws.recv())["generation"]
            stopped_at = {}

            async def stop_once(records):
                if not stopped_at:
                    stopped_at["t"] = time.monotonic()
                    await ws.send(json.dumps({"action": "stop", "generation": uid}))

            records, final, _ = await until_final(ws, uid, on_tokens=stop_once)
            latency = time.monotonic() - stopped_at["t"]
            await ws.send(json.dumps(generate_message(endless, max_new_tokens=5)))
            nxt = json.loads(await ws.recv())["generation"]
            _, after, _ = await until_final(ws, nxt)
            return final, latency, after

    final, latency, after = run_async(scenario())
    assert final["status"] == "stopped" and final["stop_reason"] == "user" and final["n_tokens"] < 2000
    assert latency < 2.0
    assert after["status"] == "done"


def test_a_page_that_disconnects_mid_stream_stops_its_generation(live, endless):
    url, _ = live

    async def scenario():
        async with websockets.connect(ws_url(url), origin=url) as ws:
            await ws.send(json.dumps(generate_message(endless, max_new_tokens=2000)))
            uid = json.loads(await ws.recv())["generation"]
            while json.loads(await ws.recv())["type"] != "tokens":
                pass
        return uid

    run_async(scenario())
    gen = wait_for(lambda: Generation.objects.filter(status="stopped").first(), timeout=15, what="the stop")
    assert gen.stop_reason == "disconnected" and gen.n_tokens < 2000


def test_four_generations_at_once_all_stream(live, endless):
    url, _ = live

    async def one(i):
        async with websockets.connect(ws_url(url), origin=url) as ws:
            await ws.send(json.dumps(generate_message(endless, max_new_tokens=800, seed=i)))
            uid = json.loads(await ws.recv())["generation"]
            first = {}

            async def mark(records):
                first.setdefault("t", time.monotonic())

            await until_final(ws, uid, on_tokens=mark)
            return first["t"], time.monotonic()

    async def scenario():
        return await asyncio.gather(*(one(i) for i in range(4)))

    spans = run_async(scenario())
    last_first_token = max(first for first, _ in spans)
    first_finish = min(end for _, end in spans)
    assert last_first_token < first_finish, f"a generation waited for another to finish: {spans}"


# -------------------------------------------------------------------------------------------------------- the API


def call(url, path, body=None, *, token=None, method=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_api_completes_with_logprobs_and_usage(live, tiny):
    url, _ = live
    status, body = call(url, "/v1/completions", {"model": tiny.slug, "prompt": "First Citizen:", "max_tokens": 8,
                                                 "temperature": 0, "logprobs": 3, "seed": 5})
    assert status == 200, body
    choice = body["choices"][0]
    assert body["object"] == "text_completion" and body["model"] == tiny.slug and body["id"].startswith("cmpl-")
    assert choice["finish_reason"] in ("length", "stop")
    gen = Generation.objects.get()
    assert choice["text"] == gen.text and body["usage"]["prompt_tokens"] == gen.prompt_tokens
    assert body["usage"]["completion_tokens"] == gen.n_tokens
    lp = choice["logprobs"]
    # a token that is part of a character shows its bytes escaped; the character goes to the token completing it
    assert lp["tokens"] == [r["t"] or r["b"] for r in gen.tokens if not r.get("eos")]
    assert all(len(t) == 3 for t in lp["top_logprobs"])
    assert lp["token_logprobs"][0] == pytest.approx(max(lp["top_logprobs"][0].values()), abs=1e-5)  # greedy


def test_the_api_streams_a_chat_as_server_sent_events(live, tiny):
    url, _ = live
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({
        "model": tiny.slug, "messages": [{"role": "user", "content": "Speak"}], "max_tokens": 20, "stream": True,
        "temperature": 0, "logprobs": True, "top_logprobs": 2, "stream_options": {"include_usage": True}}),
        {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    events = [line[6:] for line in response.read().decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert chunks[-1]["usage"]["completion_tokens"] == Generation.objects.get().n_tokens
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert text == Generation.objects.get().text
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_the_official_openai_client_streams_a_completion(live, tiny):
    openai = pytest.importorskip("openai")
    url, _ = live
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    assert tiny.slug in [m.id for m in client.models.list()]
    stream = client.completions.create(model=tiny.slug, prompt="First", max_tokens=12, temperature=0, stream=True)
    pieces = [chunk.choices[0].text for chunk in stream]
    assert len(pieces) > 1 and "".join(pieces) == Generation.objects.get().text
    chat = client.chat.completions.create(model=tiny.slug, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=5, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    assert missing.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("body,status,param,code", [
    ({"model": "nope", "prompt": "x"}, 404, "model", "model_not_found"),
    ({"prompt": "x"}, 400, "model", None),
    ({"model": "MODEL", "prompt": "x", "max_tokens": 10**7}, 400, "max_tokens", "max_tokens_exceeded"),
    ({"model": "MODEL", "prompt": "x", "temperature": -1}, 400, "temperature", None),
    ({"model": "MODEL", "prompt": "x", "top_p": 1.5}, 400, "top_p", None),
    ({"model": "MODEL", "prompt": "x" * 60_000}, 400, "prompt", "context_length_exceeded"),
    ({"model": "MODEL", "prompt": ["a", "b"]}, 400, "prompt", None),
    ({"model": "MODEL", "prompt": "x", "n": 3}, 400, "n", None),
    ({"model": "MODEL", "prompt": "x", "stream": "yes"}, 400, "stream", None),
])
def test_the_api_refuses_bad_requests_with_openai_error_objects(live, tiny, body, status, param, code):
    url, _ = live
    if body.get("model") == "MODEL":
        body["model"] = tiny.slug
    got, answer = call(url, "/v1/completions", body)
    assert got == status, answer
    error = answer["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    if code:
        assert error["code"] == code
    assert not Generation.objects.exists()


def test_the_api_refuses_malformed_json_and_wrong_methods(live):
    url, _ = live
    status, answer = call(url, "/v1/chat/completions", raw=b"{not json")
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, answer = call(url, "/v1/chat/completions", method="GET")
    assert status == 405 and "POST" in answer["error"]["message"]
    status, answer = call(url, "/v1/embeddings", {"input": "x"})
    assert status == 404 and "this server offers" in answer["error"]["message"]


def test_unpublished_models_need_their_owners_token(live, tmp_path):
    url, _ = live
    owner = User.objects.create_user("owner", password="pw-owner-123")
    draft = make_model(tmp_path, name="Owners draft", status=Model.Status.DRAFT, owner=owner)
    _, key = api_token_create(user=owner, name="laptop")
    body = {"model": draft.slug, "prompt": "First", "max_tokens": 3}
    assert call(url, "/v1/completions", body)[0] == 404
    status, answer = call(url, "/v1/completions", body, token="lab-not-a-real-token")
    assert status == 401 and answer["error"]["type"] == "authentication_error"
    assert call(url, "/v1/completions", body, token=key)[0] == 200
    assert draft.slug not in [m["id"] for m in call(url, "/v1/models")[1]["data"]]
    assert draft.slug in [m["id"] for m in call(url, "/v1/models", token=key)[1]["data"]]


def test_anonymous_api_use_is_rate_limited(live, tiny, settings):
    url, _ = live
    limit = 20  # the default the server runs with (INFERENCE_ANON_PER_MINUTE)
    body = {"model": tiny.slug, "prompt": "x", "max_tokens": 1}
    statuses = [call(url, "/v1/completions", body)[0] for _ in range(limit + 1)]
    assert statuses[:limit] == [200] * limit
    assert statuses[-1] == 429


def test_an_api_client_that_hangs_up_mid_stream_stops_the_generation(live, endless):
    url, _ = live
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({"model": endless.slug, "prompt": "First", "max_tokens": 2000,
                                                         "stream": True, "seed": 2}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.readline().startswith(b"data: ")
    conn.sock.shutdown(socket.SHUT_RDWR)  # hang up (close() alone waits for the response's file object)
    conn.close()
    gen = wait_for(lambda: Generation.objects.filter(status="stopped").first(), timeout=15, what="the stop")
    assert gen.stop_reason == "disconnected" and gen.n_tokens < 2000
