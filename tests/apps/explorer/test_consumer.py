import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from apps.explorer import realtime, services
from apps.explorer.models import Trace
from config.asgi import application
from tests.conftest import run_async as run
from workers import explorer as glue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]
ORIGIN = (b"origin", b"http://localhost:8000")


async def _connect(key: str, user=None):
    ws = WebsocketCommunicator(application, f"/ws/explorer/traces/{key}/", headers=[ORIGIN])
    if user is not None:
        ws.scope["user"] = user  # what AuthMiddlewareStack would find in the session
    connected, code = await ws.connect()
    return ws, connected, code


def _queued(owner, ckpt, text="ROMEO") -> Trace:
    return services.trace_request(ref=ckpt, text=text, user=owner, client="127.0.0.1")


def test_it_sends_the_state_at_once_then_each_change_and_closes_when_ready(owner, ckpt):
    trace = _queued(owner, ckpt)

    async def scenario():
        ws, connected, _ = await _connect(trace.key, owner)
        assert connected
        first = await ws.receive_from(timeout=3)
        assert 'id="trace-status"' in first and 'hx-swap-oob="true"' in first and 'data-status="queued"' in first
        await sync_to_async(services.trace_start)(trace_id=trace.pk, worker="infer@test")
        assert "Loading the model" in await ws.receive_from(timeout=3)
        await get_channel_layer().group_send(realtime.trace_group(trace.key),
                                             realtime.status_event(trace.key, status="running", phase="running the model"))
        assert "Running the model" in await ws.receive_from(timeout=3)
        await sync_to_async(Trace.objects.filter(pk=trace.pk).update)(status=Trace.Status.QUEUED)  # as if requeued
        await sync_to_async(glue.trace_compute)(trace_id=trace.pk)
        html = await ws.receive_from(timeout=5)
        while 'data-status="ready"' not in html:
            html = await ws.receive_from(timeout=5)
        assert "Traced <strong>5</strong> tokens" in html
        assert (await ws.receive_output(timeout=3))["type"] == "websocket.close"

    run(scenario())


def test_a_finished_trace_answers_once_and_closes(owner, ckpt):
    trace = _queued(owner, ckpt)
    services.trace_fail(trace_id=trace.pk, error="out of memory")

    async def scenario():
        ws, connected, _ = await _connect(trace.key, owner)
        assert connected
        assert "out of memory" in await ws.receive_from(timeout=3)
        assert (await ws.receive_output(timeout=3))["type"] == "websocket.close"

    run(scenario())


def test_it_refuses_unknown_traces_and_other_peoples(owner, ckpt):
    trace = _queued(owner, ckpt)
    mallory = User.objects.create_user("mallory", password="pw-mallory-123")

    async def scenario():
        _, connected, code = await _connect("0" * 64, owner)
        assert not connected and code == 4404
        _, connected, code = await _connect(trace.key, mallory)
        assert not connected and code == 4404
        ws = WebsocketCommunicator(application, f"/ws/explorer/traces/{trace.key}/", headers=[(b"origin", b"http://evil.example")])
        connected, _ = await ws.connect()
        assert not connected

    run(scenario())


def test_messages_from_the_page_get_a_notice_and_change_nothing(owner, ckpt):
    trace = _queued(owner, ckpt)

    async def scenario():
        ws, _, _ = await _connect(trace.key, owner)
        await ws.receive_from(timeout=3)
        await ws.send_to(text_data='{"type": "explorer.status", "status": "ready"}')
        assert "only sends" in await ws.receive_from(timeout=3)
        await ws.disconnect()

    run(scenario())
    trace.refresh_from_db()
    assert trace.status == Trace.Status.QUEUED
