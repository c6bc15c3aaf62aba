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
import shutil

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from apps.system.realtime import publish
from apps.system.redisconn import redis_client
from apps.training import realtime
from apps.training.errors import TrainingError
from apps.training.models import Checkpoint, Evaluation, Metric, Run, RunEvent, run_dir
from apps.training.permissions import run_may_control
from apps.training.presets import PRESETS
from apps.training.selectors import event_view
from workers.gpt.config import GPTConfig, TrainConfig
from workers.gpt.grpo_config import GRPOConfig

log = logging.getLogger(__name__)


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
        note(run, gettext_noop("Queued by %(user)s."), {"user": owner.get_username()})
        if enqueue:
            enqueue_on_commit(run.pk)
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
            note(run, gettext_noop("Cancelled by %(user)s while queued."), {"user": user.get_username()},
                 kind=RunEvent.Kind.WARNING)
            publish_status_on_commit(run.pk)
            transaction.on_commit(lambda: publish(realtime.queue_group(), realtime.queue_event()))
        elif Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE).update(cancel_requested=True):
            note(run, gettext_noop("Cancel requested by %(user)s; the worker stops after the current step."),
                 {"user": user.get_username()}, kind=RunEvent.Kind.WARNING, step=Run.objects.get(pk=run.pk).step)
            transaction.on_commit(lambda: _send_control(run.pk, realtime.CANCEL))
        else:
            run.refresh_from_db()
            raise TrainingError(f"run #{run.pk} has already {run.status}: there is nothing to cancel")
    run.refresh_from_db()
    return run


def run_message_waiting(*, run: Run) -> bool | None:
    """Whether the broker holds the run's last message, waiting in the train queue or delivered and not yet acked;
    None when Redis cannot be asked (then nobody should conclude the message is lost)."""
    if not run.task_id:
        return False
    needle = run.task_id.encode()
    try:
        client = redis_client()
        # kombu's Redis transport: a queue is a list named after it; delivered, unacked messages sit in "unacked"
        return any(needle in m for m in client.lrange("train", 0, -1)) or any(
            needle in m for m in client.hvals("unacked"))
    except Exception:
        return None


def run_stranded(*, run: Run, now=None) -> bool:
    """A queued run that has waited longer than TRAINING_STRANDED_SECONDS while the broker holds no message for it.
    The bound keeps a run that was queued a moment ago (its message may still be on its way) from being sent twice."""
    now = now or timezone.now()
    waited = (now - run.queued).total_seconds() if run.queued else float("inf")
    return waited > settings.TRAINING_STRANDED_SECONDS and run_message_waiting(run=run) is False


def run_resume(*, run: Run, user) -> Run:
    """Queue a failed or cancelled run again; it continues from its last checkpoint (or from its start if it never
    saved one), its curve continuing where the checkpoint was."""
    _require_control(run, user, "resume")
    run.refresh_from_db()
    if run.status == Run.Status.QUEUED and run_stranded(run=run):
        # queued, but its message is gone (Redis restarted without it): Resume sends a new one
        with transaction.atomic():
            Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(queued=timezone.now())
            note(run, gettext_noop("Resumed by %(user)s: its message in the queue was lost, so it is sent again."),
                 {"user": user.get_username()})
            enqueue_on_commit(run.pk)
            publish_status_on_commit(run.pk)
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
        if last:
            note(run, gettext_noop("Resumed by %(user)s: continues from its checkpoint at step %(step)s."),
                 {"user": user.get_username(), "step": last.step})
        else:
            note(run, gettext_noop("Resumed by %(user)s: continues from the start (it saved no checkpoint)."),
                 {"user": user.get_username()})
        enqueue_on_commit(run.pk)
        publish_status_on_commit(run.pk)
    run.refresh_from_db()
    return run


def run_fork(*, checkpoint: Checkpoint, user, changes: dict, name: str = "") -> Run:
    """A new run that starts from `checkpoint` of another run (weights, AdamW state, RNG) with some training
    settings changed (fork_fields: max_steps, learning_rate, warmup_steps and, but for GRPO, min_lr). Its history up
    to the checkpoint is copied, so its curve starts where the parent's was. A fine-tuning or GRPO run forks into a
    run of its kind with the same plan (base model, data set, LoRA settings), resumed from the checkpoint."""
    parent = checkpoint.run
    if not run_may_control(run=parent, user=user):
        raise PermissionDenied(f"run #{parent.pk} belongs to another user: only its owner or staff may fork it")
    _require_data(parent)
    allowed = set(fork_fields(parent))
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise TrainingError(f"a fork may change only {', '.join(sorted(allowed))}, not {', '.join(unknown)}",
                            field=unknown[0])
    train_config = _fork_train_config(parent, changes)
    if train_config["max_steps"] <= checkpoint.step:
        raise TrainingError(f"max_steps ({train_config['max_steps']}) must be more than the checkpoint's step "
                            f"({checkpoint.step}): try max_steps={checkpoint.step * 2}", field="max_steps")
    if not checkpoint.file.exists() or not checkpoint.file.with_suffix(".json").exists():
        raise TrainingError(f"the checkpoint at step {checkpoint.step} of run #{parent.pk} is no longer on disk "
                            f"({checkpoint.path}): choose another checkpoint")
    old = fork_settings(parent)
    what = ", ".join(f"{k} {old.get(k)} → {v}" for k, v in changes.items() if old.get(k) != v) or "same settings"
    with transaction.atomic():
        elapsed = (Metric.objects.filter(run=parent, step__lte=checkpoint.step).order_by("-step")
                   .values_list("elapsed", flat=True).first()) or 0.0
        evals = list(parent.evaluations.filter(step__lte=checkpoint.step))
        val_losses = [e.val_loss for e in evals if e.val_loss is not None]
        run = Run.objects.create(
            owner=user,
            name=(name or "").strip()[:100] or f"{parent.name} · fork @{checkpoint.step}",
            preset=parent.preset,
            kind=parent.kind,
            base_model=parent.base_model,
            corpus=parent.corpus,
            tokenizer=parent.tokenizer,
            data=_fork_data(parent),
            model_config=parent.model_config,
            train_config=train_config,
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
        note(run, gettext_noop("Forked by %(user)s from run #%(parent)s at step %(step)s (%(what)s)."),
             {"user": user.get_username(), "parent": parent.pk, "step": checkpoint.step, "what": what})
        note(parent, gettext_noop("Forked at step %(step)s into run #%(run)s (%(what)s)."),
             {"step": checkpoint.step, "run": run.pk, "what": what}, step=checkpoint.step)
        enqueue_on_commit(run.pk)
    return run


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def _default_name(preset: str, cfg: GPTConfig) -> str:
    base = PRESETS[preset].label if preset in PRESETS else "Custom"
    return f"{base} · {cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}"


FORK_FIELDS = ("max_steps", "learning_rate", "min_lr", "warmup_steps")


def fork_fields(run: Run) -> tuple[str, ...]:
    """The settings a fork of `run` may change. GRPO's learning rate is constant after its warmup: no min_lr."""
    return tuple(f for f in FORK_FIELDS if not (run.kind == Run.Kind.GRPO and f == "min_lr"))


def fork_settings(run: Run) -> dict:
    """The current values of fork_fields(run), wherever the run's kind keeps them."""
    tc = run.train_config
    source = tc.get("grpo", {}) if run.kind == Run.Kind.GRPO else tc
    return {f: tc["max_steps"] if f == "max_steps" else source.get(f) for f in fork_fields(run)}


def _fork_train_config(parent: Run, changes: dict) -> dict:
    """The parent's train_config with `changes`, checked (ConfigError names the field)."""
    if parent.kind == Run.Kind.GRPO:
        grpo = dict(parent.train_config["grpo"])
        grpo.update({("steps" if k == "max_steps" else k): v for k, v in changes.items()})
        cfg = GRPOConfig.from_dict(grpo)
        cfg.validate()
        return {**parent.train_config, "max_steps": cfg.steps, "grpo": cfg.to_dict()}
    train_config = dict(parent.train_config)
    if train_config.get("lr_decay_steps") == train_config["max_steps"]:
        train_config["lr_decay_steps"] = None  # it followed max_steps: let it follow the new one
    train_config.update(changes)
    return TrainConfig.from_dict(train_config).to_dict()


def _fork_data(parent: Run) -> dict:
    """The parent's data, less what belongs to the parent's result: a GRPO fork shares the held-out "before"
    evaluation (the same base model) and gets its own "after"."""
    data = dict(parent.data)
    if "heldout" in data:
        data["heldout"] = {k: v for k, v in data["heldout"].items() if k == "before"}
    return data


def _require_data(run: Run) -> None:
    if run.kind != Run.Kind.PRETRAIN:
        if run.base_model_id is None or run.corpus_id is None:
            what = "base model" if run.base_model_id is None else "data set"
            key = "base_model" if run.base_model_id is None else "corpus"
            raise TrainingError(f"the {what} of run #{run.pk} ({run.data.get(key, '?')}) was deleted: start a new "
                                f"run instead")
        return
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


def note(run: Run, message: str, params: dict | None = None, *, kind: str = RunEvent.Kind.INFO,
         step: int | None = None) -> RunEvent:
    """A timeline entry: `message` English, marked with gettext_noop, with the values of its %(name)s placeholders
    in `params` (RunEvent.text says it in each reader's language)."""
    return RunEvent.objects.create(run=run, message=message % params if params else message, template=message,
                                   params=params or {}, kind=kind, step=step)


def publish_status(run: Run) -> None:
    last = run.events.order_by("-at", "-id").first()
    publish(realtime.run_group(run.pk), realtime.status_event(
        run.pk, status=run.status, reason=run.reason, step=run.step, entry=event_view(last) if last else None))
    if run.sweep_id is not None:
        publish(realtime.sweep_group(run.sweep_id), realtime.sweep_event(run.sweep_id, run_id=run.pk,
                                                                         status=run.status))


def publish_status_on_commit(run_id: int) -> None:
    transaction.on_commit(lambda: publish_status(Run.objects.get(pk=run_id)))


def enqueue_on_commit(run_id: int) -> None:
    def enqueue():
        from workers.tasks import run_train as run_train_task

        try:
            result = run_train_task.delay(run_id)
        except Exception:  # the broker is down: the run stays queued; the page says no worker picked it up
            log.exception("could not enqueue run %s", run_id)
            return
        Run.objects.filter(pk=run_id).update(task_id=result.id)
        publish(realtime.queue_group(), realtime.queue_event())

    transaction.on_commit(enqueue)


def _send_control(run_id: int, message: bytes) -> None:
    try:
        redis_client().publish(realtime.control_channel(run_id), message)
    except Exception:  # the worker also sees the database flag when it renews its lease
        log.warning("control message for run %s not delivered", run_id, exc_info=True)
