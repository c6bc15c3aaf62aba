"""apps.system.realtime.publish: the one way sync code sends an event, from every kind of caller."""

import asyncio
import logging
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings

from apps.system.redisconn import free_port
from apps.system.realtime import publish, publish_thread_close
from tests.conftest import run_async as run

pytestmark = pytest.mark.usefixtures("redis_clean")

GROUP = "system.test"


def _listen() -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(GROUP, channel)
    return channel


def _receive(channel: str) -> dict:
    async def receive():
        return await asyncio.wait_for(get_channel_layer().receive(channel), 5)

    return run(receive())


@pytest.fixture
def unreachable_redis():
    """The channel layer pointed at a port nothing listens on."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    hosts = config["hosts"]
    config["hosts"] = [f"redis://127.0.0.1:{free_port()}/0"]
    channel_layers.backends.clear()
    yield
    config["hosts"] = hosts
    channel_layers.backends.clear()


def test_an_event_published_from_sync_code_reaches_the_group():
    channel = _listen()
    publish(GROUP, {"type": "system.test", "n": 1})
    assert _receive(channel) == {"type": "system.test", "n": 1}


def test_with_redis_unreachable_it_logs_and_returns(unreachable_redis, caplog):
    with caplog.at_level(logging.WARNING, logger="apps.system.realtime"):
        publish(GROUP, {"type": "system.test"})  # raises nothing
    assert "event system.test to system.test not delivered" in caplog.text


def test_a_worker_thread_reuses_one_loop_for_all_its_events(monkeypatch):
    layer = get_channel_layer()
    send = layer.group_send
    loops = []

    async def recording_send(group, event):
        loops.append(asyncio.get_running_loop())
        await send(group, event)

    monkeypatch.setattr(layer, "group_send", recording_send)
    channel = _listen()

    def worker():
        for n in range(3):
            publish(GROUP, {"type": "system.test", "n": n})
        publish_thread_close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(30)
    assert [_receive(channel)["n"] for _ in range(3)] == [0, 1, 2]
    assert len(loops) == 3 and loops[0] is loops[1] is loops[2]
    assert loops[0].is_closed()  # publish_thread_close let its connections go


def test_it_works_from_async_code_directly_and_through_sync_to_async():
    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(GROUP, channel)
        publish(GROUP, {"type": "system.test", "via": "coroutine"})  # scheduled on this loop, does not block it
        first = await asyncio.wait_for(layer.receive(channel), 5)
        await sync_to_async(publish)(GROUP, {"type": "system.test", "via": "sync_to_async"})
        second = await asyncio.wait_for(layer.receive(channel), 5)
        return first["via"], second["via"]

    assert run(scenario()) == ("coroutine", "sync_to_async")


def test_with_redis_unreachable_a_coroutine_caller_is_not_failed_either(unreachable_redis, caplog):
    async def scenario():
        publish(GROUP, {"type": "system.test"})
        for _ in range(100):  # let the background send fail
            await asyncio.sleep(0.05)
            if "not delivered" in caplog.text:
                return

    with caplog.at_level(logging.WARNING, logger="apps.system.realtime"):
        run(scenario())
    assert "event system.test to system.test not delivered" in caplog.text
