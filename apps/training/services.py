"""Writes for training runs. Views, the socket, the worker glue (workers/training.py) and `manage.py train` all come
through here, so the three interfaces cannot drift apart.

The life of a run:

    run_create / run_resume / run_fork ─▶ queued ─(run_claim by a train worker)─▶ preparing ─(run_start)─▶ running
        ─(run_finish)─▶ succeeded | failed | cancelled          running ─(worker shutting down: run_requeue)─▶ queued
    a worker that dies stops renewing its lease; run_recover_lost (every train worker sweeps) puts the run back in the
    queue, and the next worker resumes it from its last checkpoint (run_rewind drops the steps after it).

Every write that a page shows is published (realtime.py) after the transaction commits, never before.
"""

import logging
import os
import secrets
import shutil
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.training import realtime
from apps.training.models import Checkpoint, DeviceProfile, Evaluation, Metric, Run, RunEvent, run_dir
from workers.gpt.config import GPTConfig, TrainConfig

log = logging.getLogger(__name__)


class TrainingError(ValueError):
    """A request about a run that cannot be done; the message says why and what to do instead. `field` names the
    form field at fault, when there is one."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def lease_seconds() -> float:
    return settings.TRAINING_LEASE_SECONDS


def run_may_control(*, run: Run, user) -> bool:
    """Cancel, resume, fork: the run's owner, or staff."""
    return user is not None and user.is_authenticated and (user.is_staff or run.owner_id == user.id)


def _require_control(run: Run, user, action: str) -> None:
    if not run_may_control(run=run, user=user):
        raise PermissionDenied(f"run #{run.pk} belongs to another user: only its owner or staff may {action} it")


# ----------------------------------------------------------------------------------------------------------------------
# What users do


def run_create(*, owner, corpus, tokenizer, model_config: dict, train_config: dict, name: str = "", preset: str = "",
               data: dict | None = None, enqueue: bool = True) -> Run:
    """A new queued run. The configs are validated again here (ConfigError names the field), whoever calls."""
    model_cfg, train_cfg = GPTConfig.from_dict(dict(model_config)), TrainConfig.from_dict(dict(train_config))
    with transaction.atomic():
        run = Run.objects.create(
            owner=owner,
            name=(name or "").strip()[:100] or _default_name(preset, model_cfg),
            preset=preset,
            corpus=corpus,
            tokenizer=tokenizer,
            data=data or {"corpus": corpus.name, "tokenizer": tokenizer.name},
            model_config=model_cfg.to_dict(),
            train_config=train_cfg.to_dict(),
            queued=timezone.now(),
        )
        _note(run, f"Queued by {owner.get_username()}.")
        if enqueue:
            _enqueue_on_commit(run.pk)
    return run


def run_cancel(*, run: Run, user) -> Run:
    """Stop a run. A queued one is cancelled at once; a running one within one step (its worker is told over Redis
    and also sees the flag when it renews its lease), keeping its checkpoints and saving one where it stopped."""
    _require_control(run, user, "cancel")
    now = timezone.now()
    with transaction.atomic():
        # only while no worker holds it: a worker may be taking it this very moment
        if Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED, lease_token="").update(
                status=Run.Status.CANCELLED, reason="Cancelled before it started.", finished=now):
            _note(run, f"Cancelled by {user.get_username()} while queued.", kind=RunEvent.Kind.WARNING)
            _publish_status_on_commit(run.pk)
            transaction.on_commit(lambda: realtime.publish(realtime.queue_group(), realtime.queue_event()))
        elif Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE).update(cancel_requested=True):
            _note(run, f"Cancel requested by {user.get_username()}; the worker stops after the current step.",
                  kind=RunEvent.Kind.WARNING, step=Run.objects.get(pk=run.pk).step)
            transaction.on_commit(lambda: _send_control(run.pk, realtime.CANCEL))
        else:
            run.refresh_from_db()
            raise TrainingError(f"run #{run.pk} has already {run.status}: there is nothing to cancel")
    run.refresh_from_db()
    return run


def run_resume(*, run: Run, user) -> Run:
    """Queue a failed or cancelled run again; it continues from its last checkpoint (or from its start if it never
    saved one), its curve continuing where the checkpoint was."""
    _require_control(run, user, "resume")
    run.refresh_from_db()
    if run.status == Run.Status.QUEUED and run_message_waiting(run=run) is False:
        # queued, but its message is gone (Redis restarted without it): Resume sends a new one
        with transaction.atomic():
            Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(queued=timezone.now())
            _note(run, f"Resumed by {user.get_username()}: its message in the queue was lost, so it is sent again.")
            _enqueue_on_commit(run.pk)
            _publish_status_on_commit(run.pk)
        run.refresh_from_db()
        return run
    if run.status not in Run.STOPPED:
        hint = " Fork it from its last checkpoint to train longer." if run.status == Run.Status.SUCCEEDED else ""
        raise TrainingError(f"run #{run.pk} is {run.status}: only a failed or cancelled run can be resumed.{hint}")
    _require_data(run)
    last = run.checkpoints.order_by("-step").first()
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, status__in=Run.STOPPED).update(
            status=Run.Status.QUEUED, reason="", cancel_requested=False, queued=timezone.now(), finished=None)
        if not updated:
            raise TrainingError(f"run #{run.pk} changed meanwhile: reload the page")
        where = f"its checkpoint at step {last.step}" if last else "the start (it saved no checkpoint)"
        _note(run, f"Resumed by {user.get_username()}: continues from {where}.")
        _enqueue_on_commit(run.pk)
        _publish_status_on_commit(run.pk)
    run.refresh_from_db()
    return run


def run_fork(*, checkpoint: Checkpoint, user, changes: dict, name: str = "") -> Run:
    """A new run that starts from `checkpoint` of another run (weights, AdamW state, RNG) with some training
    settings changed (max_steps, learning_rate, min_lr, warmup_steps). Its history up to the checkpoint is copied,
    so its curve starts where the parent's was."""
    parent = checkpoint.run
    if not run_may_control(run=parent, user=user):
        raise PermissionDenied(f"run #{parent.pk} belongs to another user: only its owner or staff may fork it")
    _require_data(parent)
    allowed = {"max_steps", "learning_rate", "min_lr", "warmup_steps"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise TrainingError(f"a fork may change only {', '.join(sorted(allowed))}, not {', '.join(unknown)}",
                            field=unknown[0])
    train_config = dict(parent.train_config)
    if train_config.get("lr_decay_steps") == train_config["max_steps"]:
        train_config["lr_decay_steps"] = None  # it followed max_steps: let it follow the new one
    train_config.update(changes)
    train_cfg = TrainConfig.from_dict(train_config)
    if train_cfg.max_steps <= checkpoint.step:
        raise TrainingError(f"max_steps ({train_cfg.max_steps}) must be more than the checkpoint's step "
                            f"({checkpoint.step}): try max_steps={checkpoint.step * 2}", field="max_steps")
    if not checkpoint.file.exists() or not checkpoint.file.with_suffix(".json").exists():
        raise TrainingError(f"the checkpoint at step {checkpoint.step} of run #{parent.pk} is no longer on disk "
                            f"({checkpoint.path}): choose another checkpoint")
    what = ", ".join(f"{k} {parent.train_config.get(k)} → {v}" for k, v in changes.items()
                     if parent.train_config.get(k) != v) or "same settings"
    with transaction.atomic():
        elapsed = (Metric.objects.filter(run=parent, step__lte=checkpoint.step).order_by("-step")
                   .values_list("elapsed", flat=True).first()) or 0.0
        evals = list(parent.evaluations.filter(step__lte=checkpoint.step))
        val_losses = [e.val_loss for e in evals if e.val_loss is not None]
        run = Run.objects.create(
            owner=user,
            name=(name or "").strip()[:100] or f"{parent.name} · fork @{checkpoint.step}",
            preset=parent.preset,
            corpus=parent.corpus,
            tokenizer=parent.tokenizer,
            data=parent.data,
            model_config=parent.model_config,
            train_config=train_cfg.to_dict(),
            parent=parent,
            forked_from_step=checkpoint.step,
            step=checkpoint.step,
            train_loss=evals[-1].train_loss if evals else None,
            val_loss=evals[-1].val_loss if evals else None,
            best_val_loss=min(val_losses) if val_losses else None,
            elapsed_seconds=elapsed,
            queued=timezone.now(),
        )
        Metric.objects.bulk_create(
            [Metric(**{**_row_fields(m), "run": run}) for m in parent.metrics.filter(step__lte=checkpoint.step)],
            batch_size=2000)
        Evaluation.objects.bulk_create(
            [Evaluation(run=run, step=e.step, train_loss=e.train_loss, val_loss=e.val_loss, elapsed=e.elapsed,
                        sample=e.sample) for e in evals])
        copied = _link_checkpoint(checkpoint, run)
        Checkpoint.objects.create(run=run, step=checkpoint.step, path=copied, train_loss=checkpoint.train_loss,
                                  val_loss=checkpoint.val_loss, size_bytes=checkpoint.size_bytes)
        _note(run, f"Forked by {user.get_username()} from run #{parent.pk} at step {checkpoint.step} ({what}).")
        _note(parent, f"Forked at step {checkpoint.step} into run #{run.pk} ({what}).", step=checkpoint.step)
        _enqueue_on_commit(run.pk)
    return run


# ----------------------------------------------------------------------------------------------------------------------
# What the worker glue does (workers/training.py). Every call after run_claim carries the lease token: a worker that
# lost its lease (it stalled, and the run went to another worker) can no longer write anything.


def run_claim(*, run_id: int, worker: str, device: dict, task_id: str = "") -> Run | None:
    """Take a queued run (or one whose worker's lease ran out) for this worker: status preparing, a fresh lease.
    None when the run is finished, cancelled, unknown, or held by a live worker: a task delivered twice does nothing
    the second time."""
    now = timezone.now()
    token = secrets.token_hex(16)
    taken = Run.objects.filter(pk=run_id, status__in=Run.ACTIVE).filter(
        Q(lease_expires__isnull=True) | Q(lease_expires__lt=now)
    ).update(
        status=Run.Status.PREPARING, lease_token=token, lease_expires=now + timedelta(seconds=lease_seconds()),
        worker=worker, device=device, task_id=task_id or F("task_id"), attempts=F("attempts") + 1, reason="",
    )
    if not taken:
        return None
    run = Run.objects.get(pk=run_id)
    _note(run, f"Taken by worker {worker} ({describe_device(device)}).")
    realtime.publish(realtime.queue_group(), realtime.queue_event())
    _publish_status(run)
    return run


def run_renew(*, run_id: int, token: str) -> tuple[bool, bool]:
    """Extend the lease. Returns (still held, cancel requested)."""
    held = Run.objects.filter(pk=run_id, lease_token=token, status__in=Run.HELD).update(
        lease_expires=timezone.now() + timedelta(seconds=lease_seconds()))
    if not held:
        return False, False
    return True, Run.objects.filter(pk=run_id, cancel_requested=True).exists()


def run_note(*, run_id: int, token: str, message: str, kind: str = RunEvent.Kind.INFO, step: int | None = None) -> None:
    """A timeline entry from the worker (waiting for data, data ready, ...)."""
    run = Run.objects.filter(pk=run_id, lease_token=token).first()
    if run is not None:
        _note(run, message, kind=kind, step=step)
        _publish_status(run)


def run_rewind(*, run_id: int, token: str, step: int) -> bool:
    """Drop everything recorded after `step` (the checkpoint the run resumes from): those steps are trained again.
    Returns whether anything was dropped (then the run's epoch went up and watching pages were told)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, lease_token=token).first()
        if run is None:
            return False
        dropped = run.metrics.filter(step__gt=step).delete()[0] + run.evaluations.filter(step__gt=step).delete()[0]
        dropped += run.checkpoints.filter(step__gt=step).delete()[0]
        if not dropped and run.step <= step:
            return False
        evals = list(run.evaluations.all())
        val_losses = [e.val_loss for e in evals if e.val_loss is not None]
        last_metric = run.metrics.order_by("-step").first()
        Run.objects.filter(pk=run_id).update(
            epoch=F("epoch") + 1, step=step,
            train_loss=evals[-1].train_loss if evals else None, val_loss=evals[-1].val_loss if evals else None,
            best_val_loss=min(val_losses) if val_losses else None,
            elapsed_seconds=last_metric.elapsed if last_metric else 0.0,
        )
        run.refresh_from_db()
        epoch = run.epoch
        transaction.on_commit(lambda: realtime.publish(realtime.run_group(run_id),
                                                       realtime.rewind_event(run_id, step=step, epoch=epoch)))
    return True


def run_start(*, run_id: int, token: str, from_step: int, resumed: bool) -> bool:
    """The data is ready and training begins (or continues from `from_step`)."""
    now = timezone.now()
    if not Run.objects.filter(pk=run_id, lease_token=token).update(
            status=Run.Status.RUNNING, started=now, step=from_step):
        return False
    run = Run.objects.get(pk=run_id)
    if resumed:
        _note(run, f"Training continues from the checkpoint at step {from_step}.", step=from_step)
    else:
        _note(run, "Training started.", step=0)
    _publish_status(run)
    return True


def run_record(*, run_id: int, token: str, steps: list[list], evals: list[list], samples: list[tuple[int, str]],
               progress: dict, loop=None) -> bool:
    """Write a batch of steps and evaluations (rows in realtime.METRIC_FIELDS / EVAL_FIELDS order) and the run's
    progress, then publish them (on the caller's event `loop`, see realtime.publish). (run, step) is unique and
    conflicts are ignored: a batch written twice is written once. Returns False (and writes nothing) when this
    worker no longer holds the run."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, lease_token=token).only("pk", "epoch").first()
        if run is None:
            return False
        Metric.objects.bulk_create(
            [Metric(run_id=run_id, **dict(zip(realtime.METRIC_FIELDS, row))) for row in steps],
            ignore_conflicts=True)
        Evaluation.objects.bulk_create(
            [Evaluation(run_id=run_id, **dict(zip(realtime.EVAL_FIELDS, row))) for row in evals],
            ignore_conflicts=True)
        for step, text in samples:
            Evaluation.objects.filter(run_id=run_id, step=step).update(sample=text)
        fields = {"step": progress["step"], "latest": progress.get("latest") or {},
                  "elapsed_seconds": progress["elapsed"]}
        if evals:
            last = dict(zip(realtime.EVAL_FIELDS, evals[-1]))
            fields |= {"train_loss": last["train_loss"], "val_loss": last["val_loss"]}
            if progress.get("best_val_loss") is not None:
                fields["best_val_loss"] = progress["best_val_loss"]
        Run.objects.filter(pk=run_id).update(**fields)
        epoch = run.epoch

    group = realtime.run_group(run_id)
    if steps or evals:
        realtime.publish(group, realtime.metrics_event(run_id, steps=steps, evals=evals, progress=progress,
                                                       epoch=epoch), loop=loop)
    for step, text in samples:
        realtime.publish(group, realtime.sample_event(run_id, step=step, text=text), loop=loop)
    return True


def run_record_checkpoint(*, run_id: int, token: str, step: int, path: str, train_loss: float | None,
                          val_loss: float | None, size_bytes: int, removed: list[str]) -> bool:
    """A checkpoint was written (and rotation deleted `removed`, paths relative to ARTIFACTS_DIR)."""
    with transaction.atomic():
        if not Run.objects.filter(pk=run_id, lease_token=token).exists():
            return False
        Checkpoint.objects.update_or_create(
            run_id=run_id, step=step,
            defaults={"path": path, "train_loss": train_loss, "val_loss": val_loss, "size_bytes": size_bytes})
        Checkpoint.objects.filter(run_id=run_id, path__in=removed).delete()
    realtime.publish(realtime.run_group(run_id), realtime.checkpoint_event(run_id, step=step))
    return True


def run_sync_checkpoints(*, run: Run, found: list[tuple[int, str, dict]]) -> None:
    """Make the Checkpoint rows match the files on disk: `found` is (step, relative path, losses) of every complete
    checkpoint in the run's folder. A worker killed between writing a file and its row leaves such a difference."""
    steps = {step for step, _, _ in found}
    run.checkpoints.exclude(step__in=steps).delete()
    for step, path, losses in found:
        full = os.path.join(settings.ARTIFACTS_DIR, path)
        Checkpoint.objects.get_or_create(run=run, step=step, defaults={
            "path": path, "train_loss": losses.get("train"), "val_loss": losses.get("val"),
            "size_bytes": os.path.getsize(full) if os.path.exists(full) else 0})


def run_finish(*, run_id: int, token: str, status: str, reason: str = "", step: int | None = None) -> bool:
    """The run ended: succeeded, failed (reason says why) or cancelled. Releases the lease."""
    kinds = {Run.Status.SUCCEEDED: RunEvent.Kind.GOOD, Run.Status.FAILED: RunEvent.Kind.ERROR,
             Run.Status.CANCELLED: RunEvent.Kind.WARNING}
    with transaction.atomic():
        if not Run.objects.filter(pk=run_id, lease_token=token).update(
                status=status, reason=reason, finished=timezone.now(), lease_token="", lease_expires=None,
                cancel_requested=False):
            return False
        run = Run.objects.get(pk=run_id)
        words = {Run.Status.SUCCEEDED: "Finished", Run.Status.FAILED: "Failed", Run.Status.CANCELLED: "Cancelled"}
        message = f"{words[status]} at step {run.step}" + (f": {reason}" if reason else ".")
        _note(run, message, kind=kinds[status], step=run.step)
        _publish_status_on_commit(run_id)
        transaction.on_commit(lambda: realtime.publish(realtime.queue_group(), realtime.queue_event()))
    return True


def run_requeue(*, run_id: int, token: str, message: str) -> bool:
    """Give a run back to the queue (its worker is shutting down): the next worker continues it."""
    with transaction.atomic():
        if not Run.objects.filter(pk=run_id, lease_token=token).update(
                status=Run.Status.QUEUED, lease_token="", lease_expires=None, queued=timezone.now()):
            return False
        run = Run.objects.get(pk=run_id)
        _note(run, message, kind=RunEvent.Kind.WARNING, step=run.step)
        _enqueue_on_commit(run_id)
        _publish_status_on_commit(run_id)
    return True


def run_recover_lost(*, now=None) -> list[int]:
    """Re-queue every run whose worker stopped renewing its lease (killed, machine rebooted, network gone). Any train
    worker calls this every few seconds; the conditional update makes exactly one of them re-queue each run."""
    now = now or timezone.now()
    recovered = []
    for run in Run.objects.filter(status__in=Run.HELD, lease_expires__lt=now):
        with transaction.atomic():
            if not Run.objects.filter(pk=run.pk, lease_token=run.lease_token, lease_expires__lt=now).update(
                    status=Run.Status.QUEUED, lease_token="", lease_expires=None, queued=now):
                continue
            last = run.checkpoints.order_by("-step").first()
            where = f"its last checkpoint (step {last.step})" if last else "the start (no checkpoint yet)"
            silent = (now - run.lease_expires).total_seconds() + lease_seconds()
            _note(run, f"Worker {run.worker or '?'} stopped responding at step {run.step} (no lease renewal for "
                       f"{silent:.0f} s): the run is queued again and continues from {where} when a worker is free.",
                  kind=RunEvent.Kind.ERROR, step=run.step)
            _enqueue_on_commit(run.pk)
            _publish_status_on_commit(run.pk)
        recovered.append(run.pk)
        log.warning("run %s lost its worker %s; re-queued", run.pk, run.worker)
    return recovered


def run_message_waiting(*, run: Run) -> bool | None:
    """Whether the broker holds the run's last message, waiting in the train queue or delivered and not yet acked;
    None when Redis cannot be asked (then nobody should conclude the message is lost)."""
    if not run.task_id:
        return False
    from apps.system.redisconn import redis_client

    needle = run.task_id.encode()
    try:
        client = redis_client()
        # kombu's Redis transport: a queue is a list named after it; delivered, unacked messages sit in "unacked"
        return any(needle in m for m in client.lrange("train", 0, -1)) or any(
            needle in m for m in client.hvals("unacked"))
    except Exception:
        return None


def run_requeue_stranded(*, now=None) -> list[int]:
    """Queue again every run that has waited queued for over TRAINING_STRANDED_SECONDS while the broker holds no
    message for it (Redis restarted without its data, or it was down when the run was queued): without this such a
    run waits for ever beside an idle worker. A message that does still exist makes a second delivery, which the task
    ignores (the run is held or finished by then), so a wrong guess costs nothing."""
    now = now or timezone.now()
    bound = timedelta(seconds=settings.TRAINING_STRANDED_SECONDS)
    requeued = []
    for run in Run.objects.filter(status=Run.Status.QUEUED, queued__lt=now - bound):
        if run_message_waiting(run=run) is not False:
            continue
        with transaction.atomic():
            if not Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED, queued=run.queued).update(queued=now):
                continue  # taken or queued again meanwhile
            _note(run, f"Run #{run.pk} waited {(now - run.queued).total_seconds():.0f} s in the queue but its message "
                       f"was lost (Redis restarted or was away): it is queued again.", kind=RunEvent.Kind.WARNING,
                  step=run.step)
            _enqueue_on_commit(run.pk)
        requeued.append(run.pk)
        log.warning("run %s was queued with no message in the broker; enqueued again", run.pk)
    return requeued


def device_profile_record(*, device: dict, peak_flops: float | None = None, mfu: float | None = None) -> None:
    """Remember how fast a kind of device is: its peak (when a worker starts) and the MFU a run reached on it."""
    key = device_key(device)
    profile, _ = DeviceProfile.objects.get_or_create(
        key=key, defaults={"kind": device.get("kind", "?"), "name": device.get("name", "?")[:200]})
    if peak_flops:
        # the peak is the best ever measured: a measurement on a busy machine comes out low, never high
        profile.peak_flops = max(profile.peak_flops or 0.0, peak_flops)
    if mfu is not None and 0 < mfu <= 1:  # above 1 means the peak was measured too low: not a figure to keep
        # a running mean that favours recent runs: one odd run (a tiny model, a busy machine) moves it only a bit
        profile.mfu = mfu if profile.mfu is None else 0.7 * profile.mfu + 0.3 * mfu
        profile.runs += 1
    profile.save()


def device_peak_flops(*, device: dict) -> float | None:
    """The best peak FLOP/s measured for this kind of device so far, if any."""
    profile = DeviceProfile.objects.filter(key=device_key(device)).first()
    return profile.peak_flops if profile is not None else None


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def device_key(device: dict) -> str:
    kind = device.get("kind", "?")
    if kind == "cpu":
        return f"cpu|{device.get('name', '?')}|{device.get('cores', '?')} cores"[:200]
    return f"{kind}|{device.get('name', '?')}"[:200]


def describe_device(device: dict) -> str:
    if not device:
        return "unknown device"
    kind = str(device.get("kind", "?")).upper()
    if device.get("kind") == "cpu":
        return f"CPU {device.get('name', '')}, {device.get('cores', '?')} cores"
    return f"{kind} {device.get('name', '')}"


def _default_name(preset: str, cfg: GPTConfig) -> str:
    from apps.training.presets import PRESETS

    base = PRESETS[preset].label if preset in PRESETS else "Custom"
    return f"{base} · {cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}"


def _require_data(run: Run) -> None:
    if run.corpus_id is None or run.tokenizer_id is None:
        missing = "corpus" if run.corpus_id is None else "tokenizer"
        raise TrainingError(f"the {missing} of run #{run.pk} ({run.data.get(missing, '?')}) was deleted: start a "
                            f"new run instead")


def _row_fields(metric: Metric) -> dict:
    return {f: getattr(metric, f) for f in realtime.METRIC_FIELDS}


def _link_checkpoint(checkpoint: Checkpoint, run: Run) -> str:
    """Put the parent's checkpoint files into the fork's folder as its starting checkpoint (a hard link: instant and
    no extra space; a copy where links are impossible). Returns the new .safetensors path, relative."""
    target_dir = run.directory
    target_dir.mkdir(parents=True, exist_ok=True)
    src = checkpoint.file
    rel = f"{run_dir(run.pk)}/{src.name}"
    for source in (src, src.with_suffix(".json")):  # the JSON last: it marks the checkpoint complete
        dest = target_dir / source.name
        try:
            os.link(source, dest)
        except OSError:
            shutil.copy2(source, dest)
    return rel


def _note(run: Run, message: str, *, kind: str = RunEvent.Kind.INFO, step: int | None = None) -> RunEvent:
    return RunEvent.objects.create(run=run, message=message, kind=kind, step=step)


def _publish_status(run: Run) -> None:
    from apps.training.selectors import event_view

    last = run.events.order_by("-at", "-id").first()
    realtime.publish(realtime.run_group(run.pk), realtime.status_event(
        run.pk, status=run.status, reason=run.reason, step=run.step, entry=event_view(last) if last else None))


def _publish_status_on_commit(run_id: int) -> None:
    transaction.on_commit(lambda: _publish_status(Run.objects.get(pk=run_id)))


def _enqueue_on_commit(run_id: int) -> None:
    def enqueue():
        from workers.tasks import run_train as run_train_task

        try:
            result = run_train_task.delay(run_id)
        except Exception:  # the broker is down: the run stays queued; the page says no worker picked it up
            log.exception("could not enqueue run %s", run_id)
            return
        Run.objects.filter(pk=run_id).update(task_id=result.id)
        realtime.publish(realtime.queue_group(), realtime.queue_event())

    transaction.on_commit(enqueue)


def _send_control(run_id: int, message: bytes) -> None:
    from apps.system.redisconn import redis_client

    try:
        redis_client().publish(realtime.control_channel(run_id), message)
    except Exception:  # the worker also sees the database flag when it renews its lease
        log.warning("control message for run %s not delivered", run_id, exc_info=True)
