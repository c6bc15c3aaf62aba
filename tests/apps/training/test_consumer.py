"""ws/training/runs/<id>/: only the run's owner (and staff) may watch; events are forwarded; a page's "since"
question gets exactly what it misses; bad messages get an error and change nothing."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.system.realtime import publish
from apps.training import lease, realtime
from apps.training.models import Run
from tests.training_fixtures import make_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

ORIGIN = (b"origin", b"http://localhost:8000")


def application():
    from config.asgi import application

    return application


async def connect(run, user=None):
    headers = [ORIGIN]
    if user is not None:
        from django.test import Client

        client = Client()
        await sync_to_async(client.force_login)(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    ws = WebsocketCommunicator(application(), f"/ws/training/runs/{run.pk}/", headers=headers)
    connected, code = await ws.connect()
    return ws, connected, code


async def receive(ws, kind, timeout=3.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        message = json.loads(await ws.receive_from(timeout=left))
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind!r} message within {timeout} s")


def record(run, token, steps, evals=()):
    rows = [[s, 3.0 - s / 10, 1e-3, 0.5, 10.0, 1000.0, 0.2, s * 0.1] for s in steps]
    lease.run_record(run_id=run.pk, token=token, steps=rows, evals=[list(e) for e in evals], samples=[],
                        progress={"step": max(steps), "elapsed": 1.0, "latest": {}})


@pytest.fixture
def owned(user, tiny_corpus, char_tok):
    return make_run(user, tiny_corpus, char_tok)


def test_anonymous_visitors_and_other_users_are_refused(owned, other_user, staff):
    async def scenario():
        _, connected, code = await connect(owned)
        assert not connected and code == 4401
        _, connected, code = await connect(owned, other_user)
        assert not connected and code == 4403
        ws, connected, _ = await connect(owned, staff)
        assert connected
        await ws.disconnect()

    asyncio.run(scenario())


def test_an_unknown_run_is_refused_like_another_users(user):
    async def scenario():
        _, connected, code = await connect(Run(pk=424242), user)
        assert not connected and code == 4403

    asyncio.run(scenario())


def test_the_owner_gets_what_the_worker_publishes_and_the_history_it_missed(owned, user):
    token = lease.run_claim(run_id=owned.pk, worker="w", device={}).lease_token
    record(owned, token, [1, 2, 3], evals=[(0, 4.1, 4.2, 0.0)])  # before the page connected

    async def scenario():
        ws, connected, _ = await connect(owned, user)
        assert connected
        await ws.send_to(text_data=json.dumps({"type": "since", "step": 1, "eval": -1, "epoch": 0}))
        history = await receive(ws, "history")
        assert [r[0] for r in history["steps"]] == [2, 3] and [e[0] for e in history["evals"]] == [0]
        assert not history["reset"] and history["status"] == "preparing"
        await sync_to_async(record)(owned, token, [4, 5])
        live = await receive(ws, "metrics")
        assert [r[0] for r in live["steps"]] == [4, 5] and live["epoch"] == 0
        await sync_to_async(lease.run_finish)(run_id=owned.pk, token=token, status="succeeded")
        final = await receive(ws, "status")
        assert final["status"] == "succeeded" and final["entry"]["message"].startswith("Finished at step 5")
        await ws.disconnect()

    asyncio.run(scenario())


def test_a_page_from_before_a_rewind_gets_the_whole_history_again(owned, user):
    token = lease.run_claim(run_id=owned.pk, worker="w", device={}).lease_token
    record(owned, token, [1, 2, 3, 4])
    lease.run_rewind(run_id=owned.pk, token=token, step=2)

    async def scenario():
        ws, _, _ = await connect(owned, user)
        await ws.send_to(text_data=json.dumps({"type": "since", "step": 4, "eval": -1, "epoch": 0}))
        history = await receive(ws, "history")
        assert history["reset"] and history["epoch"] == 1 and [r[0] for r in history["steps"]] == [1, 2]
        await ws.disconnect()

    asyncio.run(scenario())


@pytest.mark.parametrize("message", ["{not json", json.dumps([1, 2]), json.dumps({"type": "delete"}),
                                     json.dumps({"type": "since", "step": "3"}), "x" * 5000,
                                     json.dumps({"type": "since", "step": -7})])
def test_malformed_messages_get_an_error_and_change_nothing(owned, user, message):
    async def scenario():
        ws, _, _ = await connect(owned, user)
        await ws.send_to(text_data=message)
        error = await receive(ws, "error")
        assert error["message"].startswith("ignored:")
        await ws.send_to(text_data=json.dumps({"type": "since"}))  # the socket still works
        assert (await receive(ws, "history"))["status"] == "queued"
        await ws.disconnect()

    asyncio.run(scenario())


def test_a_queued_run_hears_its_position_change(owned, user, tiny_corpus, char_tok):
    first = make_run(user, tiny_corpus, char_tok)
    Run.objects.filter(pk=first.pk).update(queued=owned.queued.replace(year=2000))  # queued long before

    async def scenario():
        ws, _, _ = await connect(owned, user)
        await sync_to_async(publish)(realtime.queue_group(), realtime.queue_event())
        queue = await receive(ws, "queue")
        assert queue["position"] == 2 and queue["ahead"] == 1
        await ws.disconnect()

    asyncio.run(scenario())


def test_it_refuses_a_foreign_origin(owned, user):
    async def scenario():
        ws = WebsocketCommunicator(application(), f"/ws/training/runs/{owned.pk}/",
                                   headers=[(b"origin", b"http://evil.example")])
        connected, _ = await ws.connect()
        assert not connected

    asyncio.run(scenario())
