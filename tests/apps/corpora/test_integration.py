"""The whole data path with real processes: a BPE trained from the UI on Shakespeare by a real `infer` worker, then the
corpus encoded with it by that worker, its progress arriving on the corpus's websocket, the shards exact."""

import asyncio
import re

import pytest
from channels.testing import WebsocketCommunicator

from apps.corpora.models import Shards
from apps.system.models import JobStatus
from apps.corpora.selectors import shards_files
from apps.tokenization.models import Tokenizer
from apps.tokenization.selectors import tokenizer_runtime
from tests.conftest import wait_for
from workers.gpt.data import open_tokens

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def _status(model, **lookup):
    row = model.objects.filter(**lookup).first()
    return row if row is not None and row.status not in (JobStatus.QUEUED, JobStatus.RUNNING) else None


def test_a_bpe_trained_from_the_ui_encodes_shakespeare_on_a_real_worker(client, processes, bundled, user):
    from config.asgi import application

    worker = processes.worker("infer", "infer@data")
    shakespeare = bundled["Shakespeare"]
    client.force_login(user)

    response = client.post("/tokenizers/train/", {"name": "shakespeare-512", "corpus": shakespeare.id,
                                                  "vocab_size": "512", "pattern": "gpt4",
                                                  "special_tokens": "<|endoftext|>"})
    assert response.status_code == 302
    trained = wait_for(lambda: _status(Tokenizer, name="shakespeare-512"), timeout=90, what="BPE training", proc=worker)
    assert trained.status == JobStatus.SUCCEEDED, trained.error
    assert trained.n_vocab == 512 and trained.n_merges == 255
    page = client.get("/tokenizers/shakespeare-512/").content.decode()
    assert "The first merges" in page

    async def encode_and_watch():
        ws = WebsocketCommunicator(application, f"/ws/corpora/corpus/{shakespeare.id}/",
                                   headers=[(b"origin", b"http://localhost:8000")])
        ws.scope["user"] = user
        assert (await ws.connect())[0]
        from channels.db import database_sync_to_async

        response = await database_sync_to_async(client.post)(f"/data/{shakespeare.id}/encode/",
                                                              {"tokenizer": trained.id}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        seen = []
        while not any('data-status="succeeded"' in m or 'data-status="failed"' in m for m in seen):
            seen.append(await ws.receive_from(timeout=60))
        await ws.disconnect()
        return seen

    messages = asyncio.run(encode_and_watch())
    assert any('data-status="running"' in m for m in messages)
    assert re.search(r"done</span>.*chars/s", messages[-1], re.S)

    shards = Shards.objects.get(corpus=shakespeare, tokenizer=trained)
    assert shards.status == JobStatus.SUCCEEDED, shards.error
    files = shards_files(shards_id=shards.id)
    tok = tokenizer_runtime(tokenizer=trained)
    text = shakespeare.file.read_text()
    cut = shakespeare.split["char"]
    assert open_tokens(files.train).tolist() == tok.encode(text[:cut])
    assert open_tokens(files.val).tolist() == tok.encode(text[cut:])
    assert files.dtype == "uint16" and 0.3 < shards.tokens_per_char < 0.6

    # asking again is answered from the cache: no second job
    again = client.post(f"/data/{shakespeare.id}/encode/", {"tokenizer": trained.id}, HTTP_HX_REQUEST="true")
    assert "Already encoded with shakespeare-512" in again.content.decode()
    assert Shards.objects.count() == 1
