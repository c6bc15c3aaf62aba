"""ws/corpora/corpus/<id>/: who may listen, the state sent on connect, events re-rendering a job's row."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from apps.corpora import realtime, selectors, services
from config.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

ORIGIN = [(b"origin", b"http://localhost:8000")]


def _communicator(corpus_id, user=None):
    communicator = WebsocketCommunicator(application, f"/ws/corpora/corpus/{corpus_id}/", headers=ORIGIN)
    if user is not None:
        communicator.scope["user"] = user
    return communicator


def test_a_page_opened_mid_job_gets_the_job_at_once_then_its_progress(tiny_corpus, builtins, no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=tiny_corpus.owner)
    services.shards_mark_running(shards_id=shards.id)

    async def scenario():
        ws = _communicator(tiny_corpus.id, tiny_corpus.owner)
        connected, _ = await ws.connect()
        assert connected
        first = await ws.receive_from(timeout=3)
        assert f'id="shards-{shards.id}"' in first and 'hx-swap-oob="true"' in first and 'data-status="running"' in first
        assert "Cancel" in first  # the owner may cancel
        await database_sync_to_async(services.shards_record_progress)(
            shards_id=shards.id, done_chars=500, total_chars=1000, tokens=120, elapsed=0.5)
        progress = await ws.receive_from(timeout=3)
        assert "50.0 %" in progress and "ETA" in progress
        await database_sync_to_async(services.shards_mark_failed)(shards_id=shards.id, error="disk full")
        final = await ws.receive_from(timeout=3)
        assert 'data-status="failed"' in final and "disk full" in final
        await ws.disconnect()

    asyncio.run(scenario())


def test_others_do_not_see_the_cancel_button(tiny_corpus, builtins, staff, no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=tiny_corpus.owner)
    view = selectors.shards_view(shards)

    async def scenario():
        ws = _communicator(tiny_corpus.id, staff)
        assert (await ws.connect())[0]
        await ws.receive_from(timeout=3)  # the queued row
        from channels.layers import get_channel_layer

        await get_channel_layer().group_send(realtime.corpus_group(tiny_corpus.id), realtime.shards_state_event(view))
        assert "Cancel" in await ws.receive_from(timeout=3)  # staff may
        await ws.disconnect()

    asyncio.run(scenario())


def test_someone_elses_corpus_closes_the_socket(tiny_corpus, other_user):
    async def scenario():
        for who in (other_user, None):
            ws = _communicator(tiny_corpus.id, who)
            connected, code = await ws.connect()
            assert not connected and code == 4404
        ws = _communicator(999_999, tiny_corpus.owner)
        assert (await ws.connect()) == (False, 4404)

    asyncio.run(scenario())


def test_anyone_may_watch_a_bundled_corpus(bundled):
    async def scenario():
        ws = _communicator(bundled["Shakespeare"].id)
        connected, _ = await ws.connect()
        assert connected
        assert await ws.receive_nothing(timeout=0.3)  # nothing under way
        await ws.send_to(text_data="hello?")  # messages to it are ignored, not an error
        assert await ws.receive_nothing(timeout=0.3)
        await ws.disconnect()

    asyncio.run(scenario())
