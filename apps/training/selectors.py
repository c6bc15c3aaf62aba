"""Reads for training runs: lists, one run with its history, queue position, comparison of several runs."""

import math

from django.db.models import QuerySet

from apps.system.devices import device_key
from apps.system.selectors import worker_list
from apps.training import realtime
from apps.training.estimates import shape_key
from apps.training.models import Checkpoint, DeviceProfile, Evaluation, Metric, Run, RunEvent
from apps.training.presets import PRESETS, preset_matches
from apps.training.errors import RunNotFound
from apps.training.permissions import run_may_view  # noqa: F401  (the consumer asks selectors.run_may_view)
from workers.gpt.config import GPTConfig, flops_per_token

HISTORY_MAX_POINTS = 4000  # a page gets at most this many steps of history; longer runs are downsampled, spikes kept


def run_list(*, user) -> QuerySet[Run]:
    return Run.objects.visible_to(user).select_related("owner", "corpus", "tokenizer")


def run_get(*, run_id, user) -> Run:
    try:
        return run_list(user=user).get(pk=int(run_id))
    except (Run.DoesNotExist, TypeError, ValueError):
        raise RunNotFound(f"there is no run #{str(run_id)[:20]} that you can see") from None


def checkpoint_get(*, checkpoint_id, user) -> Checkpoint:
    try:
        return Checkpoint.objects.select_related("run").get(pk=int(checkpoint_id), run__in=run_list(user=user))
    except (Checkpoint.DoesNotExist, TypeError, ValueError):
        raise RunNotFound(f"there is no checkpoint #{str(checkpoint_id)[:20]} that you can see") from None


def run_history(*, run: Run, after_step: int = -1, after_eval: int = -1,
                max_points: int | None = HISTORY_MAX_POINTS) -> dict:
    """Steps after `after_step` and evaluations after `after_eval`, as rows in realtime's field order, plus samples.
    More steps than max_points are downsampled: per bucket, the steps with the lowest and highest loss survive, so a
    spike stays visible (unlike random sampling or averaging)."""
    rows = list(Metric.objects.filter(run=run, step__gt=after_step).order_by("step")
                .values_list(*realtime.METRIC_FIELDS))
    downsampled = max_points is not None and len(rows) > max_points
    if downsampled:
        rows = downsample_minmax(rows, value=1, buckets=max_points // 2)
    evals = list(Evaluation.objects.filter(run=run, step__gt=after_eval).order_by("step")
                 .values_list(*realtime.EVAL_FIELDS, "sample"))
    return {
        "steps": [list(r) for r in rows],
        "evals": [list(e[:-1]) for e in evals],
        "samples": [{"step": e[0], "text": e[-1]} for e in evals if e[-1]],
        "epoch": run.epoch,
        "downsampled": downsampled,
    }


def downsample_minmax(rows: list, *, value: int, buckets: int) -> list:
    """Keep, per bucket of consecutive rows, the row with the smallest and the one with the largest rows[i][value]
    (in their original order). Rows whose value is None (a NaN loss) are always kept: they are the news."""
    if len(rows) <= 2 * buckets:
        return rows
    size = len(rows) / buckets
    out = []
    for b in range(buckets):
        chunk = rows[int(b * size):int((b + 1) * size)]
        finite = [r for r in chunk if r[value] is not None]
        keep = {id(r) for r in chunk if r[value] is None}
        if finite:
            keep.add(id(min(finite, key=lambda r: r[value])))
            keep.add(id(max(finite, key=lambda r: r[value])))
        out.extend(r for r in chunk if id(r) in keep)
    return out


def run_events(*, run: Run) -> QuerySet[RunEvent]:
    """The timeline, newest first."""
    return run.events.order_by("-at", "-id")


def event_view(event: RunEvent) -> dict:
    return {"at": event.at.isoformat(), "kind": event.kind, "step": event.step, "message": event.text}


def run_progress(*, run: Run) -> dict:
    """What the side panel shows, in the shape the worker publishes it."""
    return {
        "status": run.status,
        "step": run.step,
        "max_steps": run.max_steps,
        "elapsed": run.elapsed_seconds,
        "eta_seconds": run.latest.get("eta_seconds") if run.status == Run.Status.RUNNING else None,
        "latest": run.latest,
        "best_val_loss": run.best_val_loss,
    }


def run_chart_config(*, run: Run) -> dict:
    """Everything the chart needs besides the points: how to turn steps into tokens and FLOPs, reference lines."""
    cfg = GPTConfig.from_dict(dict(run.model_config))
    preset = PRESETS.get(run.preset)
    lines = [{"value": math.log(cfg.vocab_size), "label": f"ln(vocab_size = {cfg.vocab_size}) — a uniform guess"}]
    if preset_matches(preset, run.model_config, run.train_config):
        lines.append({"value": preset.reference, "label": f"{preset.reference} — {preset.reference_source}"})
    return {
        "run": run.pk,
        "name": run.name,
        "status": run.status,
        "max_steps": run.max_steps,
        "tokens_per_step": run.tokens_per_step,
        "flops_per_step": flops_per_token(cfg) * run.tokens_per_step,
        "eval_interval": run.train_config["eval_interval"],
        "lines": lines,
        "epoch": run.epoch,
        "forked_from_step": run.forked_from_step,
    }


def run_queue_position(*, run: Run) -> dict | None:
    """Where a queued run stands: runs ahead of it, runs training now, live train workers."""
    if run.status != Run.Status.QUEUED:
        return None
    ahead = Run.objects.filter(status=Run.Status.QUEUED, queued__lt=run.queued).count()
    busy = Run.objects.filter(status__in=Run.HELD).count()
    return {"position": ahead + 1, "ahead": ahead, "training": busy, "workers": len(train_workers())}


def train_workers() -> list[dict]:
    """Live workers that take the train queue, each with its device and (when known) its device profile."""
    live = [w for w in worker_list() if w["state"] == "live" and "train" in w.get("queues", [])]
    profiles = {p.key: p for p in DeviceProfile.objects.filter(key__in=[device_key(w.get("device") or {})
                                                                        for w in live])}
    return [w | {"profile": profiles.get(device_key(w.get("device") or {}))} for w in live]


# step_times: how many recent runs of a shape are read per device, how many of each run's latest steps, and how many
# first steps are skipped (they include warm-up: allocation, compilation, caches)
STEP_TIME_RUNS, STEP_TIME_STEPS, STEP_TIME_SKIP = 3, 200, 5


def step_times(*, shape: str, kind: str) -> dict[str, dict]:
    """{device key: {"ms", "low_ms", "high_ms", "runs", "steps"}}: the median and 20th/80th percentile ms/step of
    the latest steps of the most recent runs of this shape (estimates.shape_key) on each kind of device."""
    by_device: dict[str, list[int]] = {}
    for run in (Run.objects.filter(kind=kind, step__gt=STEP_TIME_SKIP).exclude(device={})
                .order_by("-updated").only("pk", "kind", "model_config", "train_config", "data", "device")[:50]):
        ids = by_device.setdefault(device_key(run.device), [])
        if len(ids) < STEP_TIME_RUNS and shape_key(kind=kind, model_config=run.model_config,
                                                    train_config=run.train_config, data=run.data) == shape:
            ids.append(run.pk)
    out = {}
    for key, ids in by_device.items():
        ms = sorted(m for run_id in ids for m in Metric.objects.filter(run_id=run_id, step__gt=STEP_TIME_SKIP)
                    .order_by("-step").values_list("ms", flat=True)[:STEP_TIME_STEPS])
        if ms:
            out[key] = {"ms": _quantile(ms, 0.5), "low_ms": _quantile(ms, 0.2), "high_ms": _quantile(ms, 0.8),
                        "runs": len(ids), "steps": len(ms)}
    return out


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_checkpoints(*, run: Run) -> QuerySet[Checkpoint]:
    """Newest first (the page says so)."""
    return run.checkpoints.order_by("-step")


# When a pretraining checkpoint is worth trying on the Generate page. Perplexity, exp(val loss), is how many tokens
# the model still hesitates between, on average. A table of token frequencies (the unigram baseline, measured on the
# run's data by the worker) is the first thing a model learns and writes letter soup; a model whose perplexity is at
# most a third of that table's has learned which tokens follow which: a character model of Shakespeare crosses it
# near val loss 2.2, where its samples turn into words and names. Runs recorded before the worker measured the
# baseline use 55 % of the uniform guess, ln(vocab_size), where the same rule lands on typical text.
TRY_PERPLEXITY_FACTOR = 3
TRY_FALLBACK_OF_UNIFORM = 0.55


def checkpoint_advice(*, run: Run, checkpoints) -> dict:
    """The best checkpoint by val loss (the latest of equals), the loss below which a checkpoint is worth trying
    and why, and the earliest checkpoint that got there."""
    scored = sorted((c for c in checkpoints if c.val_loss is not None), key=lambda c: c.step)
    best = min(scored, key=lambda c: (c.val_loss, -c.step)) if scored else None
    uniform = math.log(max(2, int(run.model_config.get("vocab_size") or 2)))
    unigram = (run.data.get("baselines") or {}).get("unigram")
    threshold = None
    if run.kind == Run.Kind.PRETRAIN:
        threshold = unigram - math.log(TRY_PERPLEXITY_FACTOR) if unigram else TRY_FALLBACK_OF_UNIFORM * uniform
    first_ready = next((c for c in scored if threshold is not None and c.val_loss <= threshold), None)
    return {"best": best, "threshold": threshold, "unigram": unigram, "uniform": uniform,
            "ready": best is not None and threshold is not None and best.val_loss <= threshold,
            "first_ready": first_ready, "factor": TRY_PERPLEXITY_FACTOR}


def run_compare(*, runs: list[Run]) -> dict:
    """Rows of the settings in which the runs differ (all settings when there is one run), and their results."""
    def flat(run: Run) -> dict:
        values = {"corpus": run.data.get("corpus"), "tokenizer": run.data.get("tokenizer")}
        values |= {k: v for k, v in run.model_config.items()}
        values |= {k: v for k, v in run.train_config.items()}
        return values

    flats = [flat(r) for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    differing = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    return {
        "differing": [{"key": k, "values": [f.get(k) for f in flats]} for k in differing],
        "same": [{"key": k, "value": flats[0].get(k)} for k in keys if k not in differing] if runs else [],
    }
