import time

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from apps.system import realtime
from config.asgi import application
from tests.apps.system.test_pages import _status
from tests.conftest import run_async as run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

ORIGIN = [(b"origin", b"http://localhost:8000")]


async def _connect(headers=ORIGIN):
    communicator = WebsocketCommunicator(application, "/ws/system/", headers=headers)
    connected, _ = await communicator.connect()
    return communicator, connected


def test_it_sends_the_workers_table_on_connect():
    async def scenario():
        ws, connected = await _connect()
        assert connected
        first = await ws.receive_from(timeout=3)
        assert 'id="workers" hx-swap-oob="true"' in first
        await ws.disconnect()

    run(scenario())


def test_a_heartbeat_adds_the_worker_and_a_goodbye_marks_it_gone():
    async def scenario():
        ws, _ = await _connect()
        await ws.receive_from(timeout=3)
        layer = get_channel_layer()
        await layer.group_send(realtime.workers_group(), realtime.heartbeat_event(_status("infer@x", queues=["infer"], age=0)))
        html = await _receive_containing(ws, 'data-worker="infer@x"')
        assert 'data-state="live"' in html
        await layer.group_send(realtime.workers_group(), realtime.worker_gone_event("infer@x"))
        await _receive_containing(ws, 'data-worker="infer@x" data-state="gone"')
        await ws.disconnect()

    run(scenario())


def test_an_older_heartbeat_arriving_late_does_not_replace_a_newer_one():
    async def scenario():
        ws, _ = await _connect()
        await ws.receive_from(timeout=3)
        layer = get_channel_layer()
        newer = _status("w@x", queues=["infer"], age=0) | {"pid": 222}
        older = newer | {"pid": 111, "ts": newer["ts"] - 5}
        await layer.group_send(realtime.workers_group(), realtime.heartbeat_event(newer))
        await _receive_containing(ws, "pid 222")
        await layer.group_send(realtime.workers_group(), realtime.heartbeat_event(older))
        html = await ws.receive_from(timeout=3)
        assert "pid 222" in html and "pid 111" not in html
        await ws.disconnect()

    run(scenario())


def test_a_silent_worker_turns_gone_without_any_event(settings):
    settings.WORKER_GONE_SECONDS = 1

    async def scenario():
        ws, _ = await _connect()
        await ws.receive_from(timeout=3)
        await get_channel_layer().group_send(realtime.workers_group(), realtime.heartbeat_event(_status("quiet@x", queues=["train"], age=0)))
        await _receive_containing(ws, 'data-worker="quiet@x" data-state="live"')
        await _receive_containing(ws, 'data-worker="quiet@x" data-state="gone"', timeout=4)
        await ws.disconnect()

    run(scenario())


def test_messages_from_the_page_get_a_notice_and_change_nothing():
    async def scenario():
        ws, _ = await _connect()
        await ws.receive_from(timeout=3)
        await ws.send_to(text_data="{not json")
        await _receive_containing(ws, "only sends updates")
        await ws.disconnect()

    run(scenario())


def test_it_refuses_a_foreign_origin():
    async def scenario():
        ws, connected = await _connect(headers=[(b"origin", b"http://evil.example")])
        assert not connected

    run(scenario())


async def _receive_containing(ws, needle, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        html = await ws.receive_from(timeout=max(0.1, deadline - time.monotonic()))
        if needle in html:
            return html
    raise AssertionError(f"no message containing {needle!r} within {timeout} s")
