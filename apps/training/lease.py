"""The worker lease protocol: what the worker glue (workers/training.py and its threads) writes about a run it
trains. Every call after run_claim carries the lease token: a worker that lost its lease (it stalled, and the run went
to another worker) can no longer write anything.

    run_claim ─▶ preparing (a fresh lease) ─▶ run_note / run_rewind / run_sync_checkpoints ─▶ run_start ─▶ running
        ─▶ run_renew (every third of TRAINING_LEASE_SECONDS) and run_record / run_record_checkpoint while training
        ─▶ run_finish (succeeded | failed | cancelled) or run_requeue (the worker shuts down)
    run_recover_lost: any train worker re-queues the runs whose worker stopped renewing its lease.

What users do to runs (create, cancel, resume, fork) is in services.py.
"""

import logging
import os
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_noop

from apps.system import files
from apps.system.devices import describe_device
from apps.system.realtime import publish
from apps.training import realtime
from apps.training.models import Checkpoint, Evaluation, Metric, Run, RunEvent
from apps.training.services import enqueue_on_commit, note, publish_status, publish_status_on_commit, run_message_waiting

log = logging.getLogger(__name__)


def lease_seconds() -> float:
    return settings.TRAINING_LEASE_SECONDS


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
    note(run, gettext_noop("Taken by worker %(worker)s (%(device)s)."),
         {"worker": worker, "device": describe_device(device)})
    publish(realtime.queue_group(), realtime.queue_event())
    publish_status(run)
    return run


def run_renew(*, run_id: int, token: str) -> tuple[bool, bool]:
    """Extend the lease. Returns (still held, cancel requested)."""
    held = Run.objects.filter(pk=run_id, lease_token=token, status__in=Run.HELD).update(
        lease_expires=timezone.now() + timedelta(seconds=lease_seconds()))
    if not held:
        return False, False
    return True, Run.objects.filter(pk=run_id, cancel_requested=True).exists()


def run_note(*, run_id: int, token: str, message: str, params: dict | None = None, kind: str = RunEvent.Kind.INFO,
             step: int | None = None) -> None:
    """A timeline entry from the worker (waiting for data, data ready, ...): services.note's message and params."""
    run = Run.objects.filter(pk=run_id, lease_token=token).first()
    if run is not None:
        note(run, message, params, kind=kind, step=step)
        publish_status(run)


def run_record_baselines(*, run_id: int, token: str, baselines: dict) -> None:
    """The losses the run's data gives without learning (run.data["baselines"]: {"unigram": nats}), measured by the
    worker once the token files are ready; the run page judges checkpoints against them."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, lease_token=token).only("pk", "data").first()
        if run is not None:
            Run.objects.filter(pk=run_id).update(data={**run.data, "baselines": baselines})


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
        transaction.on_commit(lambda: publish(realtime.run_group(run_id),
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
        note(run, gettext_noop("Training continues from the checkpoint at step %(step)s."), {"step": from_step},
             step=from_step)
    else:
        note(run, gettext_noop("Training started."), step=0)
    publish_status(run)
    return True


def run_record(*, run_id: int, token: str, steps: list[list], evals: list[list], samples: list[tuple[int, str]],
               progress: dict) -> bool:
    """Write a batch of steps and evaluations (rows in realtime.METRIC_FIELDS / EVAL_FIELDS order) and the run's
    progress, then publish them (apps.system.realtime.publish reuses the calling thread's loop). (run, step) is
    unique and conflicts are ignored: a batch written twice is written once. Returns False (and writes nothing) when
    this worker no longer holds the run."""
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
        publish(group, realtime.metrics_event(run_id, steps=steps, evals=evals, progress=progress, epoch=epoch))
    for step, text in samples:
        publish(group, realtime.sample_event(run_id, step=step, text=text))
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
    publish(realtime.run_group(run_id), realtime.checkpoint_event(run_id, step=step))
    return True


def run_sync_checkpoints(*, run: Run, found: list[tuple[int, str, dict]]) -> None:
    """Make the Checkpoint rows match the files on disk: `found` is (step, relative path, losses) of every complete
    checkpoint in the run's folder. A worker killed between writing a file and its row leaves such a difference."""
    steps = {step for step, _, _ in found}
    run.checkpoints.exclude(step__in=steps).delete()
    for step, path, losses in found:
        full = files.artifact_path(path)
        Checkpoint.objects.get_or_create(run=run, step=step, defaults={
            "path": path, "train_loss": losses.get("train"), "val_loss": losses.get("val"),
            "size_bytes": os.path.getsize(full) if os.path.exists(full) else 0})


FINISH_MESSAGES = {  # the timeline's last entry: with the reason (in the words its writer chose), or without
    Run.Status.SUCCEEDED: (gettext_noop("Finished at step %(step)s: %(reason)s"),
                           gettext_noop("Finished at step %(step)s.")),
    Run.Status.FAILED: (gettext_noop("Failed at step %(step)s: %(reason)s"), gettext_noop("Failed at step %(step)s.")),
    Run.Status.CANCELLED: (gettext_noop("Cancelled at step %(step)s: %(reason)s"),
                           gettext_noop("Cancelled at step %(step)s.")),
}


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
        with_reason, without = FINISH_MESSAGES[status]
        note(run, with_reason if reason else without, {"step": run.step, "reason": reason}, kind=kinds[status],
             step=run.step)
        publish_status_on_commit(run_id)
        transaction.on_commit(lambda: publish(realtime.queue_group(), realtime.queue_event()))
    return True


def run_requeue(*, run_id: int, token: str, message: str, params: dict | None = None) -> bool:
    """Give a run back to the queue (its worker is shutting down): the next worker continues it."""
    with transaction.atomic():
        if not Run.objects.filter(pk=run_id, lease_token=token).update(
                status=Run.Status.QUEUED, lease_token="", lease_expires=None, queued=timezone.now()):
            return False
        run = Run.objects.get(pk=run_id)
        note(run, message, params, kind=RunEvent.Kind.WARNING, step=run.step)
        enqueue_on_commit(run_id)
        publish_status_on_commit(run_id)
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
            silent = (now - run.lease_expires).total_seconds() + lease_seconds()
            params = {"worker": run.worker or "?", "step": run.step, "s": round(silent),
                      "checkpoint": last.step if last else None}
            note(run, gettext_noop("Worker %(worker)s stopped responding at step %(step)s (no lease renewal for "
                                   "%(s)s s): the run is queued again and continues from its last checkpoint (step "
                                   "%(checkpoint)s) when a worker is free.") if last else
                 gettext_noop("Worker %(worker)s stopped responding at step %(step)s (no lease renewal for %(s)s s): "
                              "the run is queued again and continues from the start (no checkpoint yet) when a "
                              "worker is free."),
                 params, kind=RunEvent.Kind.ERROR, step=run.step)
            enqueue_on_commit(run.pk)
            publish_status_on_commit(run.pk)
        recovered.append(run.pk)
        log.warning("run %s lost its worker %s; re-queued", run.pk, run.worker)
    return recovered


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
            note(run, gettext_noop("Run #%(run)s waited %(s)s s in the queue but its message was lost (Redis "
                                   "restarted or was away): it is queued again."),
                 {"run": run.pk, "s": round((now - run.queued).total_seconds())}, kind=RunEvent.Kind.WARNING,
                 step=run.step)
            enqueue_on_commit(run.pk)
        requeued.append(run.pk)
        log.warning("run %s was queued with no message in the broker; enqueued again", run.pk)
    return requeued
