"""The run lifecycle through the services: create, claim, renew, record, rewind, finish, cancel, resume, fork, and
recovery of runs whose worker died."""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from apps.system import devices
from apps.training import lease, services
from apps.training.models import Checkpoint, Evaluation, Metric, Run
from apps.training.services import TrainingError
from tests.training_fixtures import make_run, model_config, train_config
from workers.gpt.config import ConfigError

pytestmark = pytest.mark.django_db


def claim(run, worker="train@a"):
    return lease.run_claim(run_id=run.pk, worker=worker, device={"kind": "cpu", "name": "Test CPU", "cores": 2})


def record(run, token, steps, evals=()):
    rows = [[s, 2.0 - s / 100, 1e-3, 0.5, 10.0, 1000.0, 0.2, s * 0.1] for s in steps]
    return lease.run_record(run_id=run.pk, token=token, steps=rows, evals=[list(e) for e in evals], samples=[],
                               progress={"step": max(steps, default=0), "elapsed": 1.0, "latest": {}})


def test_a_new_run_is_queued_with_validated_configs_and_a_timeline(user, tiny_corpus, char_tok):
    run = make_run(user, tiny_corpus, char_tok)
    assert run.status == Run.Status.QUEUED and run.queued is not None
    assert run.train_config["lr_decay_steps"] == 30  # filled by TrainConfig.validate
    assert run.name == "tiny" and run.data == {"corpus": "Tiny", "tokenizer": "tiny-char"}
    assert run.events.get().message == "Queued by ada."


def test_it_refuses_configs_the_model_library_refuses_naming_the_field(user, tiny_corpus, char_tok):
    with pytest.raises(ConfigError) as refused:
        services.run_create(owner=user, corpus=tiny_corpus, tokenizer=char_tok,
                            model_config=model_config(char_tok) | {"n_embd": 30, "n_head": 4},
                            train_config=train_config(), enqueue=False)
    assert refused.value.field == "n_embd" and "divisible by n_head" in str(refused.value)
    assert not Run.objects.exists()


def test_a_run_is_claimed_once_and_a_second_delivery_is_refused(run):
    first = claim(run)
    assert first.status == Run.Status.PREPARING and first.attempts == 1 and first.worker == "train@a"
    assert claim(run, "train@b") is None  # the lease is alive


def test_renewing_reports_a_cancel_and_a_lost_lease(run, user):
    token = claim(run).lease_token
    assert lease.run_renew(run_id=run.pk, token=token) == (True, False)
    services.run_cancel(run=run, user=user)
    assert lease.run_renew(run_id=run.pk, token=token) == (True, True)
    assert lease.run_renew(run_id=run.pk, token="stale") == (False, False)


def test_recording_ignores_steps_it_has_and_refuses_a_worker_without_the_lease(run):
    token = claim(run).lease_token
    assert record(run, token, [1, 2, 3], evals=[(3, 2.1, 2.2, 0.3)])
    assert record(run, token, [2, 3, 4])  # overlapping batch (a retry): 2 and 3 are not doubled
    assert list(Metric.objects.filter(run=run).values_list("step", flat=True)) == [1, 2, 3, 4]
    assert not record(run, "someone-else", [5])
    assert not Metric.objects.filter(run=run, step=5).exists()
    run.refresh_from_db()
    assert run.step == 4 and run.val_loss == 2.2


def test_rewinding_drops_what_came_after_the_checkpoint_and_bumps_the_epoch(run):
    token = claim(run).lease_token
    record(run, token, range(1, 21), evals=[(10, 2.0, 2.1, 1.0), (20, 1.8, 1.9, 2.0)])
    Checkpoint.objects.create(run=run, step=10, path="runs/x/ckpt-000010.safetensors")
    Checkpoint.objects.create(run=run, step=20, path="runs/x/ckpt-000020.safetensors")
    assert lease.run_rewind(run_id=run.pk, token=token, step=10)
    run.refresh_from_db()
    assert run.epoch == 1 and run.step == 10 and run.val_loss == 2.1 and run.best_val_loss == 2.1
    assert max(Metric.objects.filter(run=run).values_list("step", flat=True)) == 10
    assert list(Evaluation.objects.filter(run=run).values_list("step", flat=True)) == [10]
    assert list(run.checkpoints.values_list("step", flat=True)) == [10]
    assert not lease.run_rewind(run_id=run.pk, token=token, step=10)  # nothing more to drop


def test_cancelling_a_queued_run_is_immediate(run, user):
    services.run_cancel(run=run, user=user)
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.reason == "Cancelled before it started."
    assert claim(run) is None  # the task, when it arrives, does nothing


def test_cancelling_a_running_run_asks_its_worker(run, user):
    claim(run)
    services.run_cancel(run=run, user=user)
    run.refresh_from_db()
    assert run.status == Run.Status.PREPARING and run.cancel_requested


def test_a_second_user_cannot_cancel_resume_or_fork_someone_elses_run(run, other_user, staff):
    with pytest.raises(PermissionDenied):
        services.run_cancel(run=run, user=other_user)
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and not run.cancel_requested
    with pytest.raises(PermissionDenied):
        services.run_resume(run=run, user=other_user)
    checkpoint = Checkpoint.objects.create(run=run, step=10, path="runs/x/ckpt-000010.safetensors")
    with pytest.raises(PermissionDenied):
        services.run_fork(checkpoint=checkpoint, user=other_user, changes={"max_steps": 50})
    services.run_cancel(run=run, user=staff)  # staff may
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED


def test_only_stopped_runs_can_be_resumed_and_finished_ones_are_pointed_to_fork(run, user):
    token = claim(run).lease_token
    with pytest.raises(TrainingError, match="only a failed or cancelled run"):
        services.run_resume(run=run, user=user)
    lease.run_finish(run_id=run.pk, token=token, status=Run.Status.SUCCEEDED)
    with pytest.raises(TrainingError, match="Fork it"):
        services.run_resume(run=run, user=user)
    with pytest.raises(TrainingError, match="nothing to cancel"):
        services.run_cancel(run=run, user=user)


def test_a_failed_run_resumes_into_the_queue(run, user):
    token = claim(run).lease_token
    lease.run_finish(run_id=run.pk, token=token, status=Run.Status.FAILED, reason="boom")
    services.run_resume(run=run, user=user)
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and run.reason == "" and run.finished is None
    assert "continues from the start" in run.events.last().message


def test_a_finish_without_the_lease_changes_nothing(run):
    claim(run)
    assert not lease.run_finish(run_id=run.pk, token="stale", status=Run.Status.SUCCEEDED)
    run.refresh_from_db()
    assert run.status == Run.Status.PREPARING


def test_a_fork_refuses_too_few_steps_other_settings_and_a_missing_file(run, user, settings):
    checkpoint = Checkpoint.objects.create(run=run, step=20, path="runs/x/ckpt-000020.safetensors")
    with pytest.raises(TrainingError) as refused:
        services.run_fork(checkpoint=checkpoint, user=user, changes={"max_steps": 20})
    assert refused.value.field == "max_steps" and "try max_steps=40" in str(refused.value)
    with pytest.raises(TrainingError, match="may change only"):
        services.run_fork(checkpoint=checkpoint, user=user, changes={"n_layer": 12})
    with pytest.raises(ConfigError):
        services.run_fork(checkpoint=checkpoint, user=user, changes={"max_steps": 50, "min_lr": 1.0})
    with pytest.raises(TrainingError, match="no longer on disk"):
        services.run_fork(checkpoint=checkpoint, user=user, changes={"max_steps": 50})
    assert Run.objects.count() == 1


def test_runs_whose_worker_stopped_renewing_are_requeued_exactly_once(run, user, tiny_corpus, char_tok, settings):
    alive = make_run(user, tiny_corpus, char_tok)
    token = claim(run).lease_token
    claim(alive, "train@b")
    later = timezone.now() + timedelta(seconds=settings.TRAINING_LEASE_SECONDS + 1)
    lease.run_renew(run_id=alive.pk, token=Run.objects.get(pk=alive.pk).lease_token)
    Run.objects.filter(pk=alive.pk).update(lease_expires=later + timedelta(seconds=60))  # still renewing
    assert lease.run_recover_lost(now=later) == [run.pk]
    assert lease.run_recover_lost(now=later) == []  # a second sweeper finds nothing to do
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED and run.lease_token == "" and run.worker == "train@a"
    assert "stopped responding" in run.events.last().message
    assert lease.run_renew(run_id=run.pk, token=token) == (False, False)  # the old worker, if it wakes up
    assert claim(run, "train@c") is not None


def test_device_profiles_remember_the_best_peak_and_a_running_mfu(db):
    device = {"kind": "cpu", "name": "Test CPU", "cores": 2}
    devices.device_profile_record(device=device, peak_flops=1e11)
    devices.device_profile_record(device=device, peak_flops=2e10)  # measured on a busy machine: ignored
    devices.device_profile_record(device=device, mfu=0.5)
    devices.device_profile_record(device=device, mfu=0.1)
    from apps.training.models import DeviceProfile

    profile = DeviceProfile.objects.get(key=devices.device_key(device))
    assert profile.peak_flops == 1e11 and profile.runs == 2
    assert devices.device_peak_flops(device=device) == 1e11
    assert profile.mfu == pytest.approx(0.7 * 0.5 + 0.3 * 0.1)


def test_long_histories_are_downsampled_keeping_every_spike(run):
    from apps.training.selectors import downsample_minmax, run_history

    rows = [[s, 2.0 + (s % 7) / 100, 0.0] for s in range(1, 10_001)]
    rows[4321][1] = 9.0  # a spike
    rows[7000][1] = None  # a NaN step
    kept = downsample_minmax(rows, value=1, buckets=500)
    assert len(kept) <= 1001 and [r[0] for r in kept] == sorted(r[0] for r in kept)
    assert rows[4321] in kept and rows[7000] in kept
    token = claim(run).lease_token
    record(run, token, range(1, 501))
    history = run_history(run=run, max_points=100)
    assert history["downsampled"] and len(history["steps"]) <= 100
    assert history["steps"][0][0] == 1 or history["steps"][0][0] <= 5


def test_the_chart_draws_the_published_result_only_while_the_run_is_the_preset(user, tiny_corpus, char_tok):
    import math

    from apps.training.presets import PRESETS
    from apps.training.selectors import run_chart_config

    preset = PRESETS["shakespeare-char-cpu"]
    as_published = services.run_create(
        owner=user, corpus=tiny_corpus, tokenizer=char_tok, preset=preset.key, enqueue=False,
        model_config=model_config(char_tok, **preset.model), train_config=train_config(**preset.train))
    changed = services.run_create(
        owner=user, corpus=tiny_corpus, tokenizer=char_tok, preset=preset.key, enqueue=False,
        model_config=model_config(char_tok, **{**preset.model, "n_layer": 6}),
        train_config=train_config(**preset.train))
    lines = run_chart_config(run=as_published)["lines"]
    assert [line["value"] for line in lines] == [math.log(char_tok.n_vocab), 1.88]
    assert len(run_chart_config(run=changed)["lines"]) == 1
    assert run_chart_config(run=as_published)["flops_per_step"] > 0


def test_an_impossible_mfu_is_not_learned(db):
    from apps.training.models import DeviceProfile

    device = {"kind": "cpu", "name": "Test CPU", "cores": 2}
    devices.device_profile_record(device=device, mfu=1.3)
    assert DeviceProfile.objects.get(key=devices.device_key(device)).mfu is None


def test_the_timeline_is_written_in_english_and_read_in_the_readers_language(client, user, tiny_corpus, char_tok):
    """Workers write events with no request to take a language from: the event keeps its msgid and values, and each
    reader gets it in theirs; words the catalogue lacks (an exception's) read as written."""
    from django.utils import translation

    from apps.training.models import RunEvent

    run = make_run(user, tiny_corpus, char_tok)
    token = claim(run).lease_token
    lease.run_note(run_id=run.pk, token=token, message="ZeroDivisionError: division by zero")
    lease.run_finish(run_id=run.pk, token=token, status=Run.Status.FAILED, reason="the loss was NaN")
    queued, taken, raw, failed = RunEvent.objects.filter(run=run).order_by("id")
    assert taken.message == "Taken by worker train@a (CPU Test CPU, 2 cores)." == taken.text
    assert failed.message == "Failed at step 0: the loss was NaN"
    with translation.override("zh-hans"):
        assert queued.text == "由 ada 加入队列。" and taken.text.startswith("由工作进程 train@a")
        assert failed.text == "在第 0 步失败：the loss was NaN"  # the reason is the writer's words
        assert raw.text == "ZeroDivisionError: division by zero"
    client.force_login(user)
    page = client.get(f"/training/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "由工作进程 train@a" in page and "在第 0 步失败" in page
    page = client.get(f"/training/runs/{run.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Taken by worker train@a" in page
