"""ws/inference/: what the socket accepts, what it refuses (and that a refusal changes nothing), and who may stop
what. The worker is not running here: starting a generation is checked by the task it queues."""

import json

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User

from apps.inference import realtime
from apps.inference.consumers import GenerateConsumer
from apps.inference.models import Generation
from apps.registry.models import Model
from apps.system.redisconn import redis_client
from tests.apps.registry.factories import make_model
from tests.conftest import run_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


@pytest.fixture
def queued(monkeypatch):
    """The ids of generations handed to the infer queue (instead of a worker taking them)."""
    from workers import tasks

    ids = []
    monkeypatch.setattr(tasks.completion_stream, "delay", lambda gid: ids.append(gid))
    return ids


@pytest.fixture
def tiny(tmp_path):
    return make_model(tmp_path, name="Tiny")


def talk(messages, *, user=None, raw=False):
    """Open a socket, send each message, return the replies (one per message), close."""

    async def scenario():
        communicator = WebsocketCommunicator(GenerateConsumer.as_asgi(), "/ws/inference/")
        communicator.scope["user"] = user or AnonymousUser()
        communicator.scope["client"] = ["10.0.0.1", 1234]
        connected, _ = await communicator.connect()
        assert connected
        replies = []
        for m in messages:
            if isinstance(m, bytes):
                await communicator.send_to(bytes_data=m)
            else:
                await communicator.send_to(text_data=m if raw or isinstance(m, str) else json.dumps(m))
            replies.append(json.loads(await communicator.receive_from(timeout=10)))
        await communicator.disconnect()
        return replies

    return run_async(scenario())


def generate_message(model_row, **extra):
    return {"action": "generate", "panel": "a", "model": model_row.slug, "mode": "chat",
            "messages": [{"role": "user", "content": "Hi"}], "params": {"temperature": 0}, **extra}


@pytest.mark.parametrize("message,words", [
    ("this is not json", "not JSON"),
    ("[1, 2, 3]", "JSON object"),
    ('{"action": "explode"}', "action must be"),
    (b"\x00\x01", "JSON text message"),
    ("x" * 300_000, "at most 256 KB"),
    ('{"action": "stop", "generation": 5}', "generation"),
    ('{"action": "branch", "generation": "not-a-uuid", "index": 0, "token": 1}', "no such generation"),
])
def test_malformed_messages_get_a_clear_error_and_change_nothing(tiny, queued, message, words):
    [reply] = talk([message])
    assert reply["type"] == "error" and words in reply["message"]
    assert not Generation.objects.exists() and queued == []


def test_bad_requests_name_the_setting_at_fault_and_create_nothing(tiny, queued):
    replies = talk([
        generate_message(tiny, params={"temperature": -1}),
        generate_message(tiny, params={"top_p": 1.5}),
        generate_message(tiny, params={"max_new_tokens": 10**7}),
        generate_message(tiny, model="no-such-model"),
        generate_message(tiny, messages=[{"role": "wizard", "content": "x"}]),
        generate_message(tiny, mode="completion", prompt=""),
    ])
    assert [r["param"] for r in replies] == ["temperature", "top_p", "max_new_tokens", "model", "messages", "prompt"]
    assert all(r["type"] == "error" and r["panel"] == "a" for r in replies)
    assert not Generation.objects.exists() and queued == []


def test_a_request_creates_the_generation_and_queues_it_once(tiny, queued):
    [created] = talk([generate_message(tiny)])
    assert created["type"] == "created" and created["panel"] == "a" and created["offset"] == 0
    assert created["model"]["slug"] == tiny.slug and created["model"]["is_chat"]
    gen = Generation.objects.get()
    assert str(gen.uid) == created["generation"] and queued == [gen.pk]
    assert gen.params["temperature"] == 0 and gen.mode == "chat" and gen.user is None


def test_someone_elses_draft_looks_absent(tmp_path, queued):
    owner = User.objects.create_user("owner", password="pw-owner-123")
    draft = make_model(tmp_path, name="Private", status=Model.Status.DRAFT, owner=owner)
    [reply] = talk([generate_message(draft)])
    assert reply["type"] == "error" and reply["param"] == "model"
    [created] = talk([generate_message(draft)], user=owner)
    assert created["type"] == "created"


def test_a_socket_cannot_stop_a_generation_it_did_not_start(tiny, queued):
    [created] = talk([generate_message(tiny)])
    [reply] = talk([{"action": "stop", "generation": created["generation"]}])
    assert reply["type"] == "error" and "no such generation" in reply["message"]
    # stopped only by its own page closing (talk() disconnects), never by the other socket's request
    assert redis_client().get(realtime.stop_key(Generation.objects.get().pk)) == b"disconnected"


def test_closing_the_page_stops_what_it_started(tiny, queued):
    talk([generate_message(tiny)])  # talk() disconnects at the end
    gen = Generation.objects.get()
    assert redis_client().get(realtime.stop_key(gen.pk)) == b"disconnected"
    assert gen.status == Generation.Status.STOPPED and gen.stop_reason == "disconnected"


def test_the_stop_button_stops_a_queued_generation_and_says_so(tiny, queued):
    async def scenario():
        communicator = WebsocketCommunicator(GenerateConsumer.as_asgi(), "/ws/inference/")
        communicator.scope["user"] = AnonymousUser()
        communicator.scope["client"] = ["10.0.0.2", 1]
        await communicator.connect()
        await communicator.send_to(text_data=json.dumps(generate_message(tiny)))
        created = json.loads(await communicator.receive_from(timeout=10))
        await communicator.send_to(text_data=json.dumps({"action": "stop", "generation": created["generation"]}))
        final = json.loads(await communicator.receive_from(timeout=10))
        await communicator.disconnect()
        return final

    final = run_async(scenario())
    assert final["type"] == "state" and final["status"] == "stopped" and final["stop_reason"] == "user"


def test_anonymous_visitors_are_rate_limited(tiny, queued, settings):
    settings.INFERENCE_ANON_PER_MINUTE = 2
    replies = talk([generate_message(tiny), generate_message(tiny), generate_message(tiny)])
    assert [r["type"] for r in replies] == ["created", "created", "error"]
    assert "limited to 2 generations a minute" in replies[2]["message"]
    user = User.objects.create_user("signed", password="pw-signed-123")
    assert talk([generate_message(tiny)], user=user)[0]["type"] == "created"  # signed-in users are not limited here


def test_the_socket_refuses_a_foreign_origin():
    from config.asgi import application

    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/inference/", headers=[(b"origin", b"http://evil.example")])
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert run_async(scenario()) is False
