"""The training glue (workers/training.py), run in this process: a run row in, checkpoints, metrics, samples and a
final state out — and every fault the issue names: cancel, resume, NaN, a full disk, data from another tokenizer,
block_size larger than the validation split, a worker shutting down, a lost lease."""

import errno
import json
import math
import threading

import pytest
import torch

from apps.training import lease, services
from apps.training.models import Checkpoint, Evaluation, Metric, Run
from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import make_run
from workers import devices, recovery
from workers import training as glue
from workers.gpt.checkpoint import list_checkpoints, load_checkpoint

# transaction=True: the glue's helper threads (lease, recorder) use their own database connections, which must see
# the rows the test made
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def queued(no_enqueue, monkeypatch):
    """Jobs the services queue (resume, fork, requeue), recorded instead of sent: no worker runs in these tests."""
    from workers import tasks

    class Result:
        id = "test-task-id"

    monkeypatch.setattr(tasks.run_train, "delay", lambda *args: no_enqueue.append(("run_train", args)) or Result())
    return no_enqueue


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models gain nothing from threads, and the CPU is shared with other tests
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(run, **kwargs) -> str:
    return glue.train_run(run.pk, worker="train@test", **kwargs)


def steps_of(run) -> list[int]:
    return list(Metric.objects.filter(run=run).order_by("step").values_list("step", flat=True))


def losses_of(run) -> list[float]:
    return list(Metric.objects.filter(run=run).order_by("step").values_list("loss", flat=True))


def test_a_run_trains_to_success_and_leaves_metrics_evaluations_samples_and_checkpoints(run, encoded):
    assert train(run) == "succeeded"
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and run.step == 30
    assert steps_of(run) == list(range(1, 31))  # every step once
    losses = losses_of(run)
    assert losses[-1] < losses[0] - 0.5  # it learned something
    evals = list(Evaluation.objects.filter(run=run).order_by("step"))
    assert [e.step for e in evals] == [0, 10, 20, 30]
    assert evals[0].val_loss == pytest.approx(math.log(run.model_config["vocab_size"]), abs=0.3)  # ln(V) at init
    assert all(e.sample for e in evals), "a sample at every evaluation, the untrained one included"
    assert run.best_val_loss == min(e.val_loss for e in evals)
    # keep_last=2 plus the best: the rows are exactly the files
    on_disk = sorted(load_checkpoint(p, with_optimizer=False).step for p in list_checkpoints(run.directory))
    assert sorted(Checkpoint.objects.filter(run=run).values_list("step", flat=True)) == on_disk
    assert on_disk[-2:] == [20, 30]
    latest = run.latest
    assert latest["tokens_per_s"] > 0 and 0 < latest["mfu"] < 1, latest
    assert [e.message for e in run.events.all()][-1].startswith("Finished at step 30")


def test_a_second_delivery_of_the_same_task_does_nothing(run, encoded):
    assert train(run) == "succeeded"
    assert train(run).startswith("skipped")
    assert steps_of(run) == list(range(1, 31))


def test_cancel_stops_within_a_step_and_saves_a_checkpoint_there(run, encoded):
    stop = threading.Event()
    original = glue.TrainingJob.on_step

    def on_step(self, report):
        original(self, report)
        if report["step"] == 13:
            stop.set()  # what the Cancel button does, through the supervisor

    glue.TrainingJob.on_step = on_step
    try:
        assert train(run, stop=stop) == "cancelled"
    finally:
        glue.TrainingJob.on_step = original
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.step == 13
    assert steps_of(run) == list(range(1, 14))
    assert "a checkpoint was saved at step 13" in run.reason
    assert Checkpoint.objects.filter(run=run, step=13).exists()


def test_resume_continues_the_curve_exactly_as_if_it_had_never_stopped(user, tiny_corpus, char_tok, encoded):
    straight = make_run(user, tiny_corpus, char_tok)
    assert train(straight) == "succeeded"

    stopped = make_run(user, tiny_corpus, char_tok)
    stop = threading.Event()
    original = glue.TrainingJob.on_step
    glue.TrainingJob.on_step = lambda self, r: (original(self, r), r["step"] == 17 and stop.set())
    try:
        assert train(stopped, stop=stop) == "cancelled"
    finally:
        glue.TrainingJob.on_step = original
    services.run_resume(run=stopped, user=user)
    assert train(stopped) == "succeeded"

    assert steps_of(stopped) == list(range(1, 31))  # the curve continues: no step lost, none doubled
    assert losses_of(stopped) == pytest.approx(losses_of(straight), rel=1e-5)  # deterministic on a CPU
    messages = [e.message for e in stopped.events.all()]
    assert any("continues from the checkpoint at step 17" in m for m in messages)


def test_a_fork_starts_from_the_checkpoint_with_a_new_learning_rate(user, run, encoded):
    assert train(run) == "succeeded"
    checkpoint = Checkpoint.objects.get(run=run, step=20)
    fork = services.run_fork(checkpoint=checkpoint, user=user, changes={"max_steps": 40, "learning_rate": 5e-3})
    assert steps_of(fork) == list(range(1, 21))  # the parent's history up to the checkpoint
    assert train(fork) == "succeeded"
    fork.refresh_from_db()
    assert steps_of(fork) == list(range(1, 41))
    assert losses_of(fork)[:20] == losses_of(run)[:20]
    lrs = list(Metric.objects.filter(run=fork, step__gt=20).values_list("lr", flat=True))
    assert max(lrs) <= 5e-3 + 1e-12 and fork.train_config["lr_decay_steps"] == 40


def test_a_diverging_run_stops_says_so_and_keeps_only_good_checkpoints(user, tiny_corpus, char_tok, encoded):
    # an absurd learning rate without clipping: the weights blow up within a few steps
    run = make_run(user, tiny_corpus, char_tok, learning_rate=1e6, min_lr=0.0, warmup_steps=0, grad_clip=0.0,
                   checkpoint_interval=1, eval_interval=1000)
    assert train(run) == "failed: diverged"
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "training diverged" in run.reason and "lower learning_rate" in run.reason
    bad = Metric.objects.filter(run=run, loss__isnull=True).order_by("step").first()
    assert bad is not None, "the step whose loss was not finite is on the curve, as a gap"
    for path in list_checkpoints(run.directory):
        ckpt = load_checkpoint(path, with_optimizer=False)
        assert ckpt.step < bad.step
        assert all(torch.isfinite(t).all() for t in ckpt.model_state.values())


def test_a_full_disk_while_checkpointing_fails_the_run_and_the_previous_checkpoint_survives(run, encoded,
                                                                                             monkeypatch):
    from workers.gpt import checkpoint as ckpt_lib

    real_save = ckpt_lib.save_file

    def save_file(tensors, path, metadata=None):
        if metadata["step"] == "20":
            with open(path, "wb") as f:
                f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt_lib, "save_file", save_file)
    assert train(run) == "failed: checkpoint"
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "No space left on device" in run.reason and "the checkpoint at step 10 is intact" in run.reason
    assert [load_checkpoint(p).step for p in list_checkpoints(run.directory)] == [10]
    assert not list(run.directory.glob("*.tmp")) and not (run.directory / "ckpt-000020.safetensors").exists()
    assert list(Checkpoint.objects.filter(run=run).values_list("step", flat=True)) == [10]

    monkeypatch.setattr(ckpt_lib, "save_file", real_save)  # space freed: resume carries on from step 10
    services.run_resume(run=run, user=run.owner)
    assert train(run) == "succeeded"
    assert steps_of(run) == list(range(1, 31))


def test_data_encoded_with_another_tokenizer_is_refused_with_the_reason(user, tiny_corpus, char_tok, encoded):
    from workers.gpt.data import open_tokens, write_tokens
    import numpy as np

    from django.conf import settings

    train_file = settings.ARTIFACTS_DIR / encoded.train_path
    ids = np.array(open_tokens(train_file))
    write_tokens(train_file, ids + 1000, np.uint16)  # ids far beyond the character vocabulary
    run = make_run(user, tiny_corpus, char_tok)
    try:
        assert train(run) == "failed"
    finally:
        write_tokens(train_file, ids, np.uint16)  # the encoded files are shared by content: put them back
    run.refresh_from_db()
    assert "tokenized with a different tokenizer" in run.reason
    assert run.step == 0 and not Metric.objects.filter(run=run).exists()


def test_a_block_size_larger_than_the_validation_split_fails_naming_the_field(user, tiny_corpus, char_tok,
                                                                               encoded):
    val_tokens = encoded.n_val_tokens
    model = {**run_model(char_tok), "block_size": val_tokens + 10}
    run = make_run(user, tiny_corpus, char_tok, model=model)
    assert train(run) == "failed"
    run.refresh_from_db()
    assert f"block_size ({val_tokens + 10}) is larger than the validation split ({val_tokens:,} tokens of Tiny with tiny-char)" in run.reason


def run_model(char_tok):
    from tests.training_fixtures import model_config

    return model_config(char_tok)


def test_a_worker_shutting_down_checkpoints_and_puts_the_run_back_in_the_queue(run, encoded, queued):
    original = glue.TrainingJob.on_step
    glue.TrainingJob.on_step = lambda self, r: (original(self, r), r["step"] == 8 and recovery.SHUTDOWN.set())
    try:
        outcome = train(run)
        assert outcome == "requeued: worker shutting down", Run.objects.get(pk=run.pk).reason
    finally:
        glue.TrainingJob.on_step = original
        recovery.SHUTDOWN.clear()
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and run.lease_token == ""
    assert Checkpoint.objects.filter(run=run, step=8).exists()
    assert "shutting down" in run.events.last().message
    assert ("run_train", (run.pk,)) in queued
    assert train(run) == "succeeded"  # the next worker continues it
    assert steps_of(run) == list(range(1, 31))


def test_a_worker_that_lost_its_lease_stops_and_writes_nothing_more(run, encoded):
    original = glue.TrainingJob.on_step

    def on_step(self, report):
        original(self, report)
        if report["step"] == 5:  # meanwhile the run went to another worker (this one had stalled)
            Run.objects.filter(pk=run.pk).update(lease_token="someone-else")
            self.supervisor.renew()

    glue.TrainingJob.on_step = on_step
    try:
        assert train(run).startswith("lost")
    finally:
        glue.TrainingJob.on_step = original
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING and run.lease_token == "someone-else"  # left to its new worker
    assert max(steps_of(run) or [0]) <= 6


def test_a_run_waits_for_its_data_and_encodes_it_itself_when_no_infer_worker_does(user, tiny_corpus, char_tok,
                                                                                    monkeypatch):
    monkeypatch.setattr(glue, "ENCODE_HERE_AFTER", 0.0)
    monkeypatch.setattr(glue, "DATA_POLL_SECONDS", 0.05)
    run = make_run(user, tiny_corpus, char_tok, max_steps=5, eval_interval=5, checkpoint_interval=5)
    assert train(run) == "succeeded"
    messages = [e.message for e in run.events.all()]
    assert any(m.startswith("Waiting for Tiny to be encoded with tiny-char") for m in messages)
    assert any(m.startswith("Data ready:") for m in messages)


def test_metrics_written_twice_are_written_once(run, encoded):
    claimed = lease.run_claim(run_id=run.pk, worker="w", device={})
    rows = [[s, 1.0, 1e-3, 0.5, 10.0, 100.0, 0.1, s * 0.01] for s in range(1, 6)]
    progress = {"step": 5, "elapsed": 0.05, "latest": {}}
    for _ in range(2):  # a batch delivered again after a reconnect
        assert lease.run_record(run_id=run.pk, token=claimed.lease_token, steps=rows, evals=[[5, 1.1, 1.2, 0.05]],
                                   samples=[(5, "abc")], progress=progress)
    assert steps_of(run) == [1, 2, 3, 4, 5]
    assert Evaluation.objects.filter(run=run).count() == 1


def test_a_peak_measured_on_this_machine_keeps_mfu_below_one():
    peak = devices.peak_flops("cpu")
    assert peak > 1e8  # even a slow shared CPU does 100 MFLOP/s
    assert devices.peak_flops("cpu") == peak  # measured once per process


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA H200 NVL", 835e12),
    ("NVIDIA A100-SXM4-40GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362e12),
    ("NVIDIA A10G", 70e12),
    ("NVIDIA A10", 125e12),
    ("NVIDIA GeForce RTX 4090", 165e12),
    ("NVIDIA GeForce RTX 3090", 71e12),
    ("Tesla T4", 65e12),
])
def test_gpu_peak_flops_come_from_the_datasheet(name, peak):
    assert devices.datasheet_peak_flops(name) == peak


def test_a_gpu_missing_from_the_datasheet_is_measured_once(monkeypatch):
    monkeypatch.setattr(devices, "_peaks", {})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Unknown 9000")
    calls = []
    monkeypatch.setattr(devices, "measure_matmul_flops", lambda kind: calls.append(kind) or 5e13)
    assert devices.peak_flops("cuda") == 5e13 and devices.peak_flops("cuda") == 5e13
    assert calls == ["cuda"]


def test_while_waiting_for_its_data_the_worker_ensures_the_encoding_once_then_only_reads(
        user, tiny_corpus, char_tok, monkeypatch):
    from apps.training import sources

    monkeypatch.setattr(glue, "ENCODE_HERE_AFTER", 0.3)
    monkeypatch.setattr(glue, "DATA_POLL_SECONDS", 0.05)
    ensure, read = sources.corpora_services.shards_ensure, sources.data_state
    calls = {"ensure": 0, "read": 0}
    monkeypatch.setattr(sources.corpora_services, "shards_ensure",
                        lambda **kw: calls.__setitem__("ensure", calls["ensure"] + 1) or ensure(**kw))
    monkeypatch.setattr(sources, "data_state",
                        lambda **kw: calls.__setitem__("read", calls["read"] + 1) or read(**kw))
    run = make_run(user, tiny_corpus, char_tok, max_steps=2, eval_interval=2, checkpoint_interval=2)
    assert train(run) == "succeeded"
    assert calls["ensure"] == 1 and calls["read"] >= 2  # polled several times before encoding here


def test_non_finite_numbers_become_none_for_json():
    assert glue.finite(float("nan")) is None and glue.finite(float("inf")) is None and glue.finite(2) == 2.0
    json.dumps([glue.finite(float("nan"))])


def test_the_cancel_button_reaches_the_worker_within_one_step(run, encoded, user, redis_clean):
    """The real path of a cancel: the service flags the row and publishes on the run's Redis control channel; the
    supervisor thread hears it while the step runs. Steps here take 50 ms, like a small model on a laptop."""
    import time

    original = glue.TrainingJob.on_step
    asked = {}

    def on_step(self, report):
        original(self, report)
        time.sleep(0.05)
        if report["step"] == 10:
            asked["at"] = 10
            services.run_cancel(run=Run.objects.get(pk=run.pk), user=user)

    glue.TrainingJob.on_step = on_step
    try:
        assert train(run) == "cancelled"
    finally:
        glue.TrainingJob.on_step = original
    run.refresh_from_db()
    assert asked["at"] == 10 and run.step <= 11, f"stopped at step {run.step}"
    assert any(e.message.startswith("Cancel requested by ada") for e in run.events.all())


def test_torch_compile_keeps_its_cache_under_artifacts_dir_so_a_second_run_starts_warm(monkeypatch, settings):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    glue.use_compile_cache()
    import os
    from pathlib import Path

    root = Path(settings.ARTIFACTS_DIR) / glue.COMPILE_CACHE
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(root / "triton")
    monkeypatch.setenv("TRITON_CACHE_DIR", "/fast/disk")  # an operator's choice wins
    glue.use_compile_cache()
    assert os.environ["TRITON_CACHE_DIR"] == "/fast/disk"
