"""ws/tokenization/tokenizer/<id>/: who may listen, the state on connect, training progress re-rendering #training."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from apps.tokenization import services
from config.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

ORIGIN = [(b"origin", b"http://localhost:8000")]


def _communicator(tokenizer_id, user=None):
    communicator = WebsocketCommunicator(application, f"/ws/tokenization/tokenizer/{tokenizer_id}/", headers=ORIGIN)
    if user is not None:
        communicator.scope["user"] = user
    return communicator


def test_the_owner_watches_training_progress_to_the_end(tiny_corpus, no_enqueue):
    row = services.tokenizer_train_create(user=tiny_corpus.owner, corpus=tiny_corpus, name="live-bpe", vocab_size=600,
                                          pattern="gpt4", special_tokens=["<|endoftext|>"])

    async def scenario():
        ws = _communicator(row.id, tiny_corpus.owner)
        assert (await ws.connect())[0]
        first = await ws.receive_from(timeout=3)
        assert 'id="training"' in first and 'hx-swap-oob="true"' in first and 'data-status="queued"' in first
        await database_sync_to_async(services.tokenizer_mark_running)(tokenizer_id=row.id)
        assert 'data-status="running"' in await ws.receive_from(timeout=3)
        await database_sync_to_async(services.tokenizer_record_progress)(
            tokenizer_id=row.id, done=86, total=343, elapsed=2.0, phase="merging")
        progress = await ws.receive_from(timeout=3)
        assert "86 / 343 merges" in progress and "43 merges/s" in progress and 'style="width: 25.1%"' in progress
        await database_sync_to_async(services.tokenizer_mark_failed)(tokenizer_id=row.id, error="out of memory")
        final = await ws.receive_from(timeout=3)
        assert 'data-status="failed"' in final and "Training failed: out of memory" in final
        await ws.disconnect()

    asyncio.run(scenario())


def test_someone_elses_tokenizer_closes_the_socket(tiny_bpe, other_user, builtins):
    async def scenario():
        for who in (other_user, None):
            ws = _communicator(tiny_bpe.id, who)
            assert await ws.connect() == (False, 4404)
        ws = _communicator(builtins["gpt2"].id)  # a built-in one is everyone's
        assert (await ws.connect())[0]
        await ws.disconnect()

    asyncio.run(scenario())
