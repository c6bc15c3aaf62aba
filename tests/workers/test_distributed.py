"""One run over several processes (workers/distributed.py through workers/training.py), on the CPU with gloo: the
train worker is rank 0, the other ranks are its child processes (or another "node" on this machine joining through
the store at TRAINING_RDZV_ENDPOINT); the curve equals the one-process curve; a rank killed with SIGKILL puts the run
back in the queue and it resumes from its checkpoint with no step lost or doubled; a rendezvous that never completes
and a group of mixed device kinds are refused with a message."""

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from apps.training import services
from apps.training.models import Checkpoint, Metric, Run
from tests.conftest import wait_for
from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import make_run
from workers import distributed
from workers import training as glue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def queued(no_enqueue, monkeypatch):
    from workers import tasks

    class Result:
        id = "test-task-id"

    monkeypatch.setattr(tasks.run_train, "delay", lambda *args: no_enqueue.append(("run_train", args)) or Result())
    return no_enqueue


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child ranks too
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def children(monkeypatch):
    """The rank processes the worker starts, to kill one."""
    started = []
    launch = distributed.launch_rank

    def record(**kwargs):
        started.append(launch(**kwargs))
        return started[-1]

    monkeypatch.setattr(distributed, "launch_rank", record)
    return started


def losses_of(run) -> list[float]:
    return list(Metric.objects.filter(run=run).order_by("step").values_list("loss", flat=True))


def steps_of(run) -> list[int]:
    return list(Metric.objects.filter(run=run).order_by("step").values_list("step", flat=True))


def train(run) -> str:
    return glue.train_run(run.pk, worker="train@test")


def test_a_run_on_two_processes_draws_the_same_curve_as_on_one(user, tiny_corpus, char_tok, encoded, children):
    one = make_run(user, tiny_corpus, char_tok, max_steps=12)
    two = make_run(user, tiny_corpus, char_tok, max_steps=12, devices=2)  # batch_size 4: 2 rows each
    assert train(one) == "succeeded"
    assert train(two) == "succeeded", Run.objects.get(pk=two.pk).reason
    assert len(children) == 1 and children[0].returncode == 0
    # float32 gradients all-reduced in another order: ~1e-7 relative; tested at 1e-5 (see tests/gpt/test_distributed)
    assert losses_of(two) == pytest.approx(losses_of(one), rel=1e-5)
    last = [Checkpoint.objects.filter(run=r).order_by("-step").first() for r in (one, two)]
    assert [c.step for c in last] == [12, 12] and last[1].val_loss == pytest.approx(last[0].val_loss, rel=1e-5)


def test_a_rank_killed_mid_run_requeues_the_run_and_it_resumes_with_no_step_lost_or_doubled(
        user, tiny_corpus, char_tok, encoded, children, queued):
    run = make_run(user, tiny_corpus, char_tok, max_steps=400, eval_interval=100, checkpoint_interval=20, devices=2)
    result = {}
    worker = threading.Thread(target=lambda: result.update(first=train(run)))
    worker.start()

    def past_a_checkpoint():
        last = Checkpoint.objects.filter(run=run).order_by("-step").first()
        return last is not None and Run.objects.get(pk=run.pk).step > last.step + 5 and last.step

    saved = wait_for(past_a_checkpoint, timeout=600, what="a checkpoint and some steps after it", interval=0.05)
    os.kill(children[0].pid, signal.SIGKILL)
    worker.join(timeout=600)
    assert result["first"] == "requeued: a rank stopped", result
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and ("run_train", (run.pk,)) in queued
    assert "rank 1 (exit code -9) of the 2 training processes stopped" in run.events.last().message

    assert train(run) == "succeeded", Run.objects.get(pk=run.pk).reason
    run.refresh_from_db()
    assert steps_of(run) == list(range(1, 401))
    resumed = [e.message for e in run.events.all() if e.message.startswith("Training continues from the checkpoint")]
    assert resumed and int(resumed[-1].rsplit(" ", 1)[1].rstrip(".")) >= saved


def test_two_nodes_on_this_machine_join_one_run_through_the_rendezvous(user, tiny_corpus, char_tok, encoded,
                                                                       settings):
    one = make_run(user, tiny_corpus, char_tok, max_steps=8)
    two = make_run(user, tiny_corpus, char_tok, max_steps=8, devices=2)
    assert train(one) == "succeeded"
    endpoint = f"127.0.0.1:{distributed.free_port()}"
    settings.TRAINING_RDZV_ENDPOINT, settings.TRAINING_NNODES = endpoint, 2  # node 0: one rank, this process
    node = subprocess.Popen([sys.executable, "-m", "workers.distributed", "node"], env=os.environ | {
        "TRAINING_RDZV_ENDPOINT": endpoint, "TRAINING_NNODES": "2", "TRAINING_NODE_RANK": "1",
        "TRAINING_NODE_ONCE": "1"}, stdout=subprocess.PIPE, text=True)
    try:
        assert train(two) == "succeeded", Run.objects.get(pk=two.pk).reason
        out, _ = node.communicate(timeout=60)
    finally:
        node.kill()
    assert "node 1: joining a run of 2 ranks as ranks 1..1" in out and node.returncode == 0
    assert losses_of(two) == pytest.approx(losses_of(one), rel=1e-5)


def test_a_rendezvous_that_never_completes_fails_the_run_with_a_message_and_it_can_be_resumed(
        user, tiny_corpus, char_tok, encoded, settings):
    run = make_run(user, tiny_corpus, char_tok, max_steps=8, devices=2)
    settings.TRAINING_RDZV_ENDPOINT = f"127.0.0.1:{distributed.free_port()}"
    settings.TRAINING_NNODES, settings.TRAINING_RDZV_TIMEOUT = 2, 1.5  # the second node never comes
    assert train(run) == "failed: process group"
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "did not complete within TRAINING_RDZV_TIMEOUT (2 s): 1 of 2 ranks joined, ranks [1]" in run.reason
    services.run_resume(run=run, user=user)  # not lost: Resume queues it again
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED


def test_a_group_of_mixed_device_kinds_is_refused():
    port = distributed.free_port()
    store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=5))
    store.set("k/kind/1", "cuda")
    with pytest.raises(distributed.GroupFailed, match=r"cannot mix device kinds \(rank 0: cpu, rank 1: cuda\)") as e:
        distributed._rendezvous(store, "k", 2, "cpu", 5.0, [])
    assert not e.value.requeue


def test_more_nodes_than_the_devices_divide_among_is_refused():
    with pytest.raises(distributed.GroupFailed, match=r"devices \(3\) must divide among the 2 nodes"):
        with distributed.process_group(devices=3, spec={}, kind="cpu", timeout=1.0, nnodes=2):
            pass


def test_which_devices_the_worker_lacks_fail_the_run_with_a_message_before_any_process_starts(
        user, tiny_corpus, char_tok, encoded, children):
    run = make_run(user, tiny_corpus, char_tok, max_steps=4, devices=2, device_ids="0,1")  # this worker: a CPU
    assert train(run) == "failed" and children == []
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.reason == ("device_ids (0,1) choose GPUs, but this worker (train@test) computes on CPU: leave "
                          "device_ids empty")


def test_which_devices_choose_the_gpus_of_one_machine_only():
    with pytest.raises(distributed.GroupFailed, match=r"chooses GPUs of one machine; a run over the 2 machines") as e:
        with distributed.process_group(devices=4, spec={}, kind="cuda", timeout=1.0, nnodes=2, device_ids=[1, 3]):
            pass
    assert not e.value.requeue

