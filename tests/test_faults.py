"""Faults lose nothing: Redis killed and restarted under a training run, a generation and a shard job; an infer
worker killed mid-stream. Real Redis servers, real worker processes (the launcher's own command lines).

Each test here starts its own redis-server (it is killed with SIGKILL and started again on the same port, without
its data, as a crashed server with no persistence comes back) and points the workers it starts at it."""

import os
import signal
import subprocess
import time

import pytest
import redis as redis_lib

from apps.system.redisconn import free_port, redis_server_start
from apps.training.models import Metric, Run
from tests.conftest import wait_for
from tests.training_fixtures import make_run, train_worker
from tests.training_fixtures import char_tok, encoded  # noqa: F401  (fixtures)
from tests.data_fixtures import tiny_corpus, user  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True)]


class Redis:
    """A private redis-server that a test can kill and bring back on the same port."""

    def __init__(self, data_dir):
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self):
        self.proc = redis_server_start(port=self.port, data_dir=self.data_dir, persist=False,
                                       stdout=subprocess.DEVNULL)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def private_redis(tmp_path):
    server = Redis(tmp_path / "redis")
    yield server
    server.stop()


def test_a_run_survives_redis_dying_mid_run_and_every_step_is_recorded_once(
        processes, private_redis, user, tiny_corpus, char_tok, encoded):
    # queued with no message anywhere: the worker's sweep must notice and enqueue it (the stranded-run rule)
    run = make_run(user, tiny_corpus, char_tok, enqueue=False, max_steps=400, eval_interval=50, checkpoint_interval=50)
    env = {"LAB_TEST_REDIS_URL": private_redis.url, "TRAINING_STRANDED_SECONDS": "2"}
    worker = train_worker_at(processes, "train@steady", env)
    wait_for(lambda: Run.objects.get(pk=run.pk).step > 40, timeout=120, what="the stranded run to be picked up and "
             "train a while", proc=worker, interval=0.05)

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
    services.run_resume(run=run, user=user)
    assert sent == [run.pk]
    assert "message in the queue was lost" in run.events.order_by("-id").first().message
