"""ws/training/sweeps/<id>/: only the sweep's owner (and staff) may watch; a run of the sweep changing status
reaches the page."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.training import services
from apps.training.models import Run, Sweep
from tests.training_fixtures import make_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

ORIGIN = (b"origin", b"http://localhost:8000")


async def connect(sweep, user=None):
    from config.asgi import application

    headers = [ORIGIN]
    if user is not None:
        from django.test import Client

        client = Client()
        await sync_to_async(client.force_login)(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    ws = WebsocketCommunicator(application, f"/ws/training/sweeps/{sweep.pk}/", headers=headers)
    connected, code = await ws.connect()
    return ws, connected, code


@pytest.fixture
def sweep_run(user, tiny_corpus, char_tok):
    sweep = Sweep.objects.create(owner=user, name="s", corpus=tiny_corpus, tokenizer=char_tok)
    run = make_run(user, tiny_corpus, char_tok)
    Run.objects.filter(pk=run.pk).update(sweep=sweep)
    return sweep, Run.objects.get(pk=run.pk)


def test_visitors_and_other_users_are_turned_away(sweep_run, other_user):
    sweep, _ = sweep_run

    async def scenario():
        _, connected, code = await connect(sweep)
        assert not connected and code == 4401
        _, connected, code = await connect(sweep, other_user)
        assert not connected and code == 4403

    asyncio.run(scenario())


def test_a_run_changing_status_reaches_its_sweeps_page(sweep_run, user):
    sweep, run = sweep_run

    async def scenario():
        ws, connected, _ = await connect(sweep, user)
        assert connected
        await sync_to_async(services.publish_status)(run)
        message = json.loads(await ws.receive_from(timeout=5))
        assert message == {"type": "sweep", "sweep": sweep.pk, "run": run.pk, "status": "queued"}
        await ws.disconnect()

    asyncio.run(scenario())
