"""Faults lose nothing: Redis killed and restarted under a training run, a generation and a shard job; an infer
worker killed mid-stream. Real Redis servers, real worker processes (the launcher's own command lines).

Each test here starts its own redis-server (it is killed with SIGKILL and started again on the same port, without
its data, as a crashed server with no persistence comes back) and points the workers it starts at it."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib

from apps.system.redisconn import free_port
from apps.training.models import Metric, Run
from tests.conftest import wait_for
from tests.training_fixtures import make_run, train_worker
from tests.training_fixtures import char_tok, encoded  # noqa: F401  (fixtures)
from tests.data_fixtures import builtins, bundled, no_enqueue, tiny_corpus, user  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True)]
ROOT_BIN = Path(sys.executable).parent


def test_a_run_survives_redis_dying_mid_run_and_every_step_is_recorded_once(
        processes, private_redis, user, tiny_corpus, char_tok, encoded):
    # queued with no message anywhere: the worker's sweep must notice and enqueue it (the stranded-run rule)
    run = make_run(user, tiny_corpus, char_tok, enqueue=False, max_steps=400, eval_interval=50, checkpoint_interval=50)
    env = {"LAB_TEST_REDIS_URL": private_redis.url, "TRAINING_STRANDED_SECONDS": "2"}
    worker = train_worker_at(processes, "train@steady", env)
    wait_for(lambda: (r := Run.objects.get(pk=run.pk)).step > 40 or r.status == Run.Status.FAILED, timeout=120,
             what="the stranded run to be picked up and train a while", proc=worker, interval=0.05)
    assert Run.objects.get(pk=run.pk).status != Run.Status.FAILED, Run.objects.get(pk=run.pk).reason

    private_redis.kill()  # mid-run: the run's unacked message goes with it
    time.sleep(2)
    private_redis.start()  # same port, no data
    wait_for(lambda: Run.objects.get(pk=run.pk).status in (Run.Status.SUCCEEDED, Run.Status.FAILED), timeout=180,
             what="the run to finish after Redis came back", proc=worker)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.reason
    assert list(Metric.objects.filter(run=run).values_list("step", flat=True)) == list(range(1, 401))

    # the worker reconnected: a run queued after the restart (its message lost too) is trained by the same worker
    second = make_run(user, tiny_corpus, char_tok, enqueue=False, max_steps=30)
    wait_for(lambda: Run.objects.get(pk=second.pk).status == Run.Status.SUCCEEDED, timeout=120,
             what="the same worker to take a run after Redis came back", proc=worker)
    assert Run.objects.get(pk=second.pk).worker == "train@steady"


def test_a_run_put_back_while_redis_was_down_is_not_stranded(
        processes, private_redis, user, tiny_corpus, char_tok, encoded):
    """The issue's case: Redis dies, the worker is stopped (it checkpoints and cannot enqueue the run again), Redis
    and a worker come back: the run continues from its checkpoint with no step lost or doubled."""
    run = make_run(user, tiny_corpus, char_tok, enqueue=False, max_steps=300, eval_interval=50, checkpoint_interval=50)
    env = {"LAB_TEST_REDIS_URL": private_redis.url, "TRAINING_STRANDED_SECONDS": "2"}
    first = train_worker_at(processes, "train@first", env)
    wait_for(lambda: Run.objects.get(pk=run.pk).step > 30, timeout=120, what="the run to train a while", proc=first,
             interval=0.05)
    private_redis.kill()
    os.killpg(first.pid, signal.SIGTERM)  # `make run` used to do this when Redis died
    first.wait(60)
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED  # checkpointed and put back, but no message
    private_redis.start()
    second = train_worker_at(processes, "train@second", env)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED, timeout=180,
             what="the run to continue on the second worker", proc=second)
    assert list(Metric.objects.filter(run=run).values_list("step", flat=True)) == list(range(1, 301))
    assert any("message was lost" in e.message for e in Run.objects.get(pk=run.pk).events.all())


def train_worker_at(processes, name, env):
    from apps.system.management.commands.lab import worker_command

    cmd = worker_command("train")
    cmd[cmd.index("-n") + 1] = name
    return processes.start(name.replace("@", "-"), cmd, OMP_NUM_THREADS="1", **env)


def test_resume_sends_a_queued_run_whose_message_was_lost_again(user, tiny_corpus, char_tok, redis_clean,
                                                                 monkeypatch):
    from apps.training import services
    from workers import tasks

    sent = []

    class Result:
        id = "a-task-id"

    monkeypatch.setattr(tasks.run_train, "delay", lambda run_id: sent.append(run_id) or Result())
    run = make_run(user, tiny_corpus, char_tok, enqueue=False)
    assert services.run_message_waiting(run=run) is False
    with pytest.raises(services.TrainingError):  # queued a moment ago: its message may still be on its way
        services.run_resume(run=run, user=user)
    assert sent == []
    from datetime import timedelta

    from apps.training.models import Run

    Run.objects.filter(pk=run.pk).update(queued=run.queued - timedelta(hours=1))
    run.refresh_from_db()
    services.run_resume(run=run, user=user)
    assert sent == [run.pk]
    assert "message in the queue was lost" in run.events.order_by("-id").first().message


# ----------------------------------------------------------------------------------------------------------------------
# an infer worker killed mid-stream


def _live(name: str) -> bool:
    from apps.system.selectors import worker_list

    return any(w["name"] == name and w["state"] == "live" for w in worker_list())


@pytest.fixture
def endless(tmp_path):
    """A model with no end-of-text token: it generates until max_new_tokens, long enough to be killed mid-stream."""
    from tests.apps.registry.factories import make_model

    model = make_model(tmp_path, name="Endless", n_layer=4, n_embd=64, ctx=64)
    model.stop_ids = []
    model.save(update_fields=["stop_ids"])
    return model


def test_a_killed_infer_worker_ends_the_pages_stream_and_the_apis_within_worker_gone_seconds(
        processes, endless, redis_clean, settings):
    import asyncio
    import http.client
    import json
    from urllib.parse import urlparse

    import websockets

    url = processes.asgi_server()
    gone_after = settings.WORKER_GONE_SECONDS  # the test settings' 3 s; INFERENCE_EVENT_TIMEOUT stays 120 s
    assert settings.INFERENCE_EVENT_TIMEOUT >= 100

    worker = processes.worker("infer", "infer@doomed")
    wait_for(lambda: _live("infer@doomed"), timeout=60, what="the infer worker's heartbeat", proc=worker)

    async def page():
        async with websockets.connect(url.replace("http", "ws") + "/ws/inference/", origin=url) as ws:
            await ws.send(json.dumps({"action": "generate", "panel": "a", "model": endless.slug, "mode": "completion",
                                      "prompt": "First", "params": {"max_new_tokens": 2048, "seed": 1}}))
            killed = None
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 90))
                if m["type"] == "tokens" and killed is None:
                    os.killpg(worker.pid, signal.SIGKILL)
                    killed = time.monotonic()
                elif m["type"] == "state" and m["status"] in ("done", "failed", "stopped"):
                    assert killed is not None, "the generation ended before the worker could be killed"
                    return m, time.monotonic() - killed

    final, waited = asyncio.run(page())
    assert final["status"] == "failed" and "the worker went silent" in final["error"], final
    assert waited < gone_after + 30, f"the page waited {waited:.0f} s"

    second = processes.worker("infer", "infer@doomed-too")
    wait_for(lambda: _live("infer@doomed-too"), timeout=60, what="the second infer worker", proc=second)
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=90)
    conn.request("POST", "/v1/completions", json.dumps({"model": endless.slug, "prompt": "First", "max_tokens": 2048,
                                                        "stream": True}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    first = response.read(6)  # the first chunk has begun: tokens are flowing
    assert first.startswith(b"data: ")
    os.killpg(second.pid, signal.SIGKILL)
    killed = time.monotonic()
    rest = response.read().decode()
    waited = time.monotonic() - killed
    assert "the worker went silent" in rest and rest.rstrip().endswith("data: [DONE]"), rest[-500:]
    assert waited < gone_after + 30, f"the API stream waited {waited:.0f} s"
    print(f"worker gone after {gone_after} s; the streams ended {waited:.1f} s after the kill")


def test_a_generation_ends_with_its_result_when_redis_restarts_mid_stream(processes, private_redis, endless):
    """Redis restarted without its data forgets every group: the worker finishes into the database, and the page
    and the API, hearing nothing more, take the final state from the row. Nothing hangs."""
    import asyncio
    import http.client
    import json
    from urllib.parse import urlparse

    import websockets

    from apps.inference.models import Generation

    port = free_port()
    daphne = str(ROOT_BIN / "daphne")
    web = processes.start("daphne-private", [daphne, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
                          LAB_TEST_REDIS_URL=private_redis.url)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url), timeout=60, what="daphne", proc=web)
    worker = processes.start("infer-private", _infer_command("infer@restart"), LAB_TEST_REDIS_URL=private_redis.url)
    wait_for(lambda: _beats(private_redis.url, "infer@restart"), timeout=60, what="the infer worker", proc=worker)

    def restart_redis():
        private_redis.kill()
        time.sleep(1)
        private_redis.start()

    async def page():
        async with websockets.connect(url.replace("http", "ws") + "/ws/inference/", origin=url) as ws:
            await ws.send(json.dumps({"action": "generate", "panel": "a", "model": endless.slug, "mode": "completion",
                                      "prompt": "First", "params": {"max_new_tokens": 2048, "seed": 1}}))
            restarted = False
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 90))
                if m["type"] == "tokens" and not restarted:
                    await asyncio.get_running_loop().run_in_executor(None, restart_redis)
                    restarted = True
                elif m["type"] == "state" and m["status"] in ("done", "failed", "stopped"):
                    return m

    final = asyncio.run(page())
    row = Generation.objects.get(uid=final["generation"])
    assert final["status"] == row.status and final["text"] == row.text, (final.get("error"), row.error)

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=90)
    conn.request("POST", "/v1/completions", json.dumps({"model": endless.slug, "prompt": "First", "max_tokens": 2048,
                                                        "stream": True}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.read(6) == b"data: "
    restart_redis()
    rest = response.read().decode()
    assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]
    assert '"finish_reason": "length"' in rest or "error" in rest


def _answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url + "/", timeout=2)
        return True
    except OSError:
        return False


def _beats(redis_url: str, name: str) -> bool:
    try:
        return redis_lib.Redis.from_url(redis_url, socket_connect_timeout=1).exists(f"lab:system:worker:{name}") == 1
    except redis_lib.RedisError:
        return False


def _infer_command(name: str) -> list[str]:
    from apps.system.management.commands.lab import worker_command

    cmd = worker_command("infer")
    cmd[cmd.index("-n") + 1] = name
    return cmd


def test_a_shard_encoding_job_finishes_when_redis_restarts_under_it(processes, private_redis, bundled, builtins,
                                                                   monkeypatch):
    from kombu import Connection

    from apps.corpora import services as corpora_services
    from apps.corpora.models import Shards
    from apps.system.models import JobStatus
    from workers.tasks import corpus_encode

    def enqueue_on_private_redis(shards_id):
        with Connection(private_redis.url) as conn:
            result = corpus_encode.apply_async((shards_id,), connection=conn)
        Shards.objects.filter(id=shards_id).update(task_id=result.id)

    monkeypatch.setattr(corpora_services, "_enqueue_encode", enqueue_on_private_redis)
    worker = processes.start("infer-shards", _infer_command("infer@shards"), LAB_TEST_REDIS_URL=private_redis.url)
    wait_for(lambda: _beats(private_redis.url, "infer@shards"), timeout=60, what="the infer worker", proc=worker)
    shards = corpora_services.shards_ensure(corpus_id=bundled["Shakespeare"].pk, tokenizer_id=builtins["gpt2"].pk)
    wait_for(lambda: Shards.objects.get(pk=shards.pk).status != JobStatus.QUEUED, timeout=60,
             what="the worker to take the job", proc=worker, interval=0.02)
    private_redis.kill()  # while it encodes (or just after: either way it must end, and say how)
    time.sleep(1)
    private_redis.start()
    done = wait_for(lambda: (s := Shards.objects.get(pk=shards.pk)).status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
                    and s, timeout=180, what="the job to end after Redis came back", proc=worker)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert worker.poll() is None, "the worker is still there, reconnected"


# ----------------------------------------------------------------------------------------------------------------------
# open pages after a Redis restart: their sockets are joined to their groups again and told what they missed

@pytest.fixture
def layer_on_private_redis(private_redis):
    """This process's channel layer (the consumers under WebsocketCommunicator use it) pointed at the private Redis."""
    from channels.layers import channel_layers
    from django.conf import settings

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    hosts = config["hosts"]
    config["hosts"] = [private_redis.url]
    channel_layers.backends.clear()
    yield private_redis
    config["hosts"] = hosts
    channel_layers.backends.clear()


def test_a_run_dashboards_socket_is_asked_to_catch_up_and_hears_the_run_again_after_a_redis_restart(
        layer_on_private_redis, user, tiny_corpus, char_tok):
    import asyncio

    from channels.layers import get_channel_layer

    from apps.training import realtime
    from tests.apps.training.test_consumer import connect, receive

    run = make_run(user, tiny_corpus, char_tok, enqueue=False)

    async def scenario():
        ws, connected, _ = await connect(run, user)
        assert connected
        await ws.send_json_to({"type": "since", "step": -1, "eval": -1, "epoch": -1})
        await receive(ws, "history")
        await asyncio.get_running_loop().run_in_executor(None, layer_on_private_redis.restart)
        await receive(ws, "resync", timeout=15)  # the page then sends "since" and gets what was lost (from the DB)
        event = realtime.status_event(run.pk, status="running", reason="", step=3, entry=None)
        await get_channel_layer().group_send(realtime.run_group(run.pk), event)
        assert (await receive(ws, "status"))["step"] == 3, "the socket is in the run's group again"
        await ws.disconnect()

    asyncio.run(scenario())


def test_a_shard_job_that_ended_while_redis_was_down_shows_how_it_ended_on_the_open_corpus_page(
        layer_on_private_redis, tiny_corpus, builtins, no_enqueue):
    import asyncio

    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from apps.corpora import services as corpora_services
    from config.asgi import application

    shards = corpora_services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id,
                                            user=tiny_corpus.owner)
    corpora_services.shards_mark_running(shards_id=shards.id)

    async def scenario():
        ws = WebsocketCommunicator(application, f"/ws/corpora/corpus/{tiny_corpus.id}/",
                                   headers=[(b"origin", b"http://localhost:8000")])
        ws.scope["user"] = tiny_corpus.owner
        assert (await ws.connect())[0]
        assert 'data-status="running"' in await ws.receive_from(timeout=3)
        layer_on_private_redis.kill()
        # the job ends while Redis is away: its state event is lost
        await database_sync_to_async(corpora_services.shards_mark_failed)(shards_id=shards.id, error="disk full")
        layer_on_private_redis.start()
        row = await ws.receive_from(timeout=15)
        assert f'id="shards-{shards.id}"' in row and 'data-status="failed"' in row and "disk full" in row
        await ws.disconnect()

    asyncio.run(scenario())
