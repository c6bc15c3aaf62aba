"""The first real path: browser-side websocket ⇄ daphne/Channels ⇄ Redis ⇄ Celery worker, all real processes."""

import asyncio
import json
import os
import re
import signal
import time

import pytest
import redis
import websockets
from django.conf import settings

from apps.system import realtime
from tests.conftest import run_async, wait_for
from tests.data_fixtures import tiny_corpus, user  # noqa: F401  (fixtures)
from workers.gpt import tokenizers as toklib

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def _recorded(name):
    raw = redis.Redis.from_url(settings.REDIS_URL).get(realtime.worker_key(name))
    return json.loads(raw) if raw else None


def test_a_real_worker_runs_a_task_from_the_infer_queue(processes, tiny_corpus, user):
    from apps.tokenization.models import Tokenizer
    from apps.tokenization.selectors import tokenizer_runtime
    from apps.tokenization.services import tokenizer_train_create

    proc = processes.worker("infer", "infer@test")
    row = tokenizer_train_create(user=user, corpus=tiny_corpus, name="worker-bpe", vocab_size=280, pattern="gpt4",
                                 special_tokens=[toklib.ENDOFTEXT])  # queued on commit: the test runs in autocommit
    done = ("succeeded", "failed", "cancelled")
    wait_for(lambda: Tokenizer.objects.filter(pk=row.pk, status__in=done).exists(), timeout=60,
             what="the worker to train the tokenizer", proc=proc)
    row.refresh_from_db()
    assert row.status == "succeeded", row.error
    reference = toklib.train_bpe(tiny_corpus.file.read_text(encoding="utf-8"), 280, "gpt4", name="worker-bpe")
    assert tokenizer_runtime(tokenizer=row).merges() == reference.merges()


def test_a_worker_announces_its_queues_and_device(processes):
    proc = processes.worker("infer", "infer@announce")
    status = wait_for(lambda: _recorded("infer@announce"), timeout=60, what="the first heartbeat", proc=proc)
    assert status["queues"] == ["infer"] and status["pool"] == "thread"
    assert status["device"]["torch"].startswith("2.") and status["device"]["cores"] >= 1
    assert time.time() - status["ts"] < 5


def test_a_clean_shutdown_removes_the_worker(processes):
    proc = processes.worker("train", "train@bye")
    wait_for(lambda: _recorded("train@bye"), timeout=60, what="the first heartbeat", proc=proc)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    assert _recorded("train@bye") is None


def test_the_system_socket_shows_a_new_worker_live_and_a_killed_one_gone(processes):
    url = processes.asgi_server()
    ws_url = url.replace("http", "ws") + "/ws/system/"

    async def scenario():
        async with websockets.connect(ws_url, origin=url) as ws:
            await _receive_matching(ws, r'id="workers"', timeout=5)  # the snapshot on connect
            worker = processes.worker("train", "train@live")
            started = time.monotonic()
            await _receive_matching(ws, r'data-worker="train@live" data-state="live"', timeout=60)
            appeared = time.monotonic() - started
            os.killpg(worker.pid, signal.SIGKILL)
            killed = time.monotonic()
            html = await _receive_matching(ws, r'data-worker="train@live" data-state="gone"', timeout=settings.WORKER_GONE_SECONDS + 5)
            return appeared, time.monotonic() - killed, html

    appeared, gone_after, html = run_async(scenario())
    assert gone_after < settings.WORKER_GONE_SECONDS + 3
    assert "<strong>CPU</strong>" in html or "<strong>CUDA</strong>" in html
    print(f"worker visible {appeared:.1f} s after start; marked gone {gone_after:.1f} s after SIGKILL")


def test_the_system_socket_refuses_a_foreign_origin(processes):
    url = processes.asgi_server()

    async def scenario():
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url.replace("http", "ws") + "/ws/system/", origin="http://evil.example"):
                pass
        return refused.value.response.status_code

    assert run_async(scenario()) == 403


async def _receive_matching(ws, pattern, timeout):
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(ws.recv(), timeout=left)
        except TimeoutError:
            break
        if re.search(pattern, message):
            return message
    raise AssertionError(f"no websocket message matching {pattern!r} within {timeout} s")
