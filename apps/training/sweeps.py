"""Scaling sweeps: writes and reads. A sweep is a plan (workers.gpt.scaling.plan_grid: for each compute budget a few
model sizes, each trained for as many tokens as spends it) carried out by ORDINARY pretraining runs: run_create
queues each one, so a sweep's runs are claimed, resumed after a lost worker, cancelled and forked like any other.
The sweep only groups them (Run.sweep) and fits what they measured (scaling.sweep_fit) whenever the page asks.

    sweep_plan(...)    the grid and its time on each live train worker, for the form's preview
    sweep_create(...)  a Sweep and one queued run per grid row
    sweep_predict(...) the fit's forecast for the next budget, and the run that checks it
    sweep_summary(...) everything the sweep page draws: runs, points, fits, problems, prediction and outcome
"""

import math

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from apps.training import estimates, sources
from apps.training.models import Run, Sweep
from apps.training.selectors import train_workers
from apps.training.services import TrainingError, run_create, run_may_control
from workers.gpt import scaling
from workers.gpt.config import ConfigError, GPTConfig, TrainConfig, flops_per_token, param_count

DEFAULT_PRESET = scaling.CPU_PRESET.key


class SweepNotFound(TrainingError):
    """No such sweep, or not one the user may see (the two are not told apart)."""


def _scaling_text(template: str, params: dict) -> str:
    """A sentence of workers/gpt/scaling.py (which imports no Django) in the reader's language: its templates are
    marked with gettext_noop there, so the catalogue has them."""
    return _(template) % params if params else _(template)


def _problems(fit: scaling.SweepFit) -> list[str]:
    return [_scaling_text(template, params) for template, params in fit.notes]


def max_runs() -> int:
    return settings.TRAINING_SWEEP_MAX_RUNS


# ----------------------------------------------------------------------------------------------------------------------
# planning


def sweep_plan(*, user, corpus, tokenizer, preset_key: str, budgets: list[float] | None = None,
               per_budget: int | None = None) -> dict:
    """The grid a sweep would run, with the time it would take on each live train worker. TrainingError (naming
    the field) when the corpus or tokenizer is not the user's to use, or no grid fits the budgets."""
    preset = scaling.SWEEP_PRESETS.get(preset_key)
    if preset is None:
        raise TrainingError(_("unknown preset %(key)s: choose one of %(keys)s")
                            % {"key": preset_key, "keys": ", ".join(scaling.SWEEP_PRESETS)}, field="preset")
    if not sources.corpus_choices(user=user).filter(pk=corpus.pk).exists():
        raise TrainingError(_("corpus %(name)s is not yours to train on: choose one of your corpora or a public one")
                            % {"name": corpus.name}, field="corpus")
    if not sources.tokenizer_choices(user=user).filter(pk=tokenizer.pk).exists():
        raise TrainingError(_("tokenizer %(name)s is not one you can use (or is not trained yet): choose another")
                            % {"name": tokenizer.name}, field="tokenizer")
    info = sources.data_info(corpus=corpus, tokenizer=tokenizer)
    if info.problem:
        raise TrainingError(info.problem, field="tokenizer")
    budgets = sorted(budgets) if budgets else list(preset.budgets)
    per_budget = per_budget or preset.per_budget
    try:
        rows = scaling.plan_grid(budgets=budgets, shapes=list(preset.shapes), base=preset.base(vocab_size=info.vocab_size),
                                 batch_size=preset.batch_size, per_budget=per_budget, flops_per_s=preset.flops_per_s,
                                 step_s=preset.step_s, tokens_per_param=preset.tokens_per_param)
    except scaling.ScalingError as exc:
        raise TrainingError(_scaling_text(exc.template, exc.params), field="budgets") from None
    if len(rows) > max_runs():
        raise TrainingError(_("this sweep would queue %(n)d runs; at most %(max)d are allowed: use fewer budgets or "
                              "fewer sizes per budget") % {"n": len(rows), "max": max_runs()}, field="budgets")
    return {"preset": preset, "rows": rows, "budgets": budgets, "per_budget": per_budget, "data_info": info,
            "workers": _worker_times(rows, preset), "guess_seconds": sum(r.seconds for r in rows),
            "train_tokens": info.train_tokens}


def _worker_times(rows: list[scaling.GridRow], preset: scaling.SweepPreset) -> list[dict]:
    """Seconds for the whole grid on each live train worker, run one after another: steps · fixed cost per step +
    FLOPs / FLOP/s, the FLOP/s being the worker's measured peak times the MFU runs reached on it (a typical MFU
    when none has finished there yet), or the preset's figure when the worker never measured its peak."""
    out = []
    for w in train_workers():
        device = w.get("device") or {}
        profile = w.get("profile")
        peak = getattr(profile, "peak_flops", None)
        mfu = getattr(profile, "mfu", None)
        measured = peak is not None and mfu is not None
        flops_per_s = estimates.flops_per_second(w) or preset.flops_per_s
        seconds = sum(r.steps * preset.step_s + r.flops / flops_per_s for r in rows)
        out.append({"name": w["name"], "device": device, "flops_per_s": flops_per_s, "seconds": seconds,
                    "measured": measured, "has_peak": peak is not None})
    return out


def _train_config(preset: scaling.SweepPreset, row: scaling.GridRow) -> dict:
    return TrainConfig.from_dict(preset.train_config(row)).to_dict()


def _model_config(preset: scaling.SweepPreset, row: scaling.GridRow, vocab_size: int) -> dict:
    return GPTConfig(**{**preset.base(vocab_size=vocab_size), "n_layer": row.n_layer, "n_head": row.n_head,
                        "n_embd": row.n_embd}).to_dict()


def _run_name(sweep_name: str, row: scaling.GridRow, *, prediction: bool = False) -> str:
    what = _("prediction") if prediction else f"C={row.budget:.2g}"
    return f"{sweep_name} · {what} · {row.n_layer}L/{row.n_head}H/{row.n_embd}"[:100]


# ----------------------------------------------------------------------------------------------------------------------
# writes


def sweep_create(*, owner, corpus, tokenizer, preset_key: str, budgets: list[float] | None = None,
                 per_budget: int | None = None, name: str = "") -> Sweep:
    """A sweep and one queued pretraining run per grid row, all or nothing."""
    plan = sweep_plan(user=owner, corpus=corpus, tokenizer=tokenizer, preset_key=preset_key, budgets=budgets,
                      per_budget=per_budget)
    preset, rows, info = plan["preset"], plan["rows"], plan["data_info"]
    name = (name or "").strip()[:100] or f"{preset.label} · {len(rows)} runs"
    data = {"corpus": corpus.name, "tokenizer": tokenizer.name, "n_vocab": info.n_vocab,
            "train_tokens": info.train_tokens, "val_tokens": info.val_tokens, "exact": info.exact}
    try:
        with transaction.atomic():
            sweep = Sweep.objects.create(owner=owner, name=name, preset=preset.key, corpus=corpus, tokenizer=tokenizer,
                                         base_config={"model": preset.base(vocab_size=info.vocab_size),
                                                      "batch_size": preset.batch_size},
                                         budgets=plan["budgets"])
            grid = []
            for row in rows:
                run = run_create(owner=owner, corpus=corpus, tokenizer=tokenizer,
                                 model_config=_model_config(preset, row, info.vocab_size),
                                 train_config=_train_config(preset, row), name=_run_name(name, row), data=data)
                Run.objects.filter(pk=run.pk).update(sweep=sweep)
                grid.append(row.to_dict() | {"run": run.pk})
            sweep.grid = grid
            sweep.save(update_fields=["grid"])
    except ConfigError as exc:
        raise TrainingError(str(exc), field="budgets") from None
    return sweep


def sweep_predict(*, sweep: Sweep, user) -> Sweep:
    """Forecast the best loss at the next budget (the last one times the ladder's step) from the fitted L(C), and
    queue the model the fitted N_opt(C) calls for there (the preset's shape nearest it, trained to spend the
    budget). The forecast is stored before the run trains, so the page shows prediction and outcome side by side."""
    if not run_may_control(run=sweep, user=user):  # same rule as a run's: its owner, or staff
        raise TrainingError(_("sweep #%(id)d belongs to another user: only its owner or staff may extend it")
                            % {"id": sweep.pk})
    if sweep.prediction:
        raise TrainingError(_("this sweep already has its prediction run (#%(run)s)")
                            % {"run": sweep.prediction.get("run")})
    if sweep.corpus_id is None or sweep.tokenizer_id is None:
        raise TrainingError(_("the sweep's corpus or tokenizer was deleted: start a new sweep instead"))
    fit = scaling.sweep_fit(sweep_points(sweep=sweep))
    if fit.loss is None or fit.n_opt is None:
        raise TrainingError(_("the fit cannot predict yet: %(why)s") % {"why": "; ".join(_problems(fit))})
    preset = scaling.SWEEP_PRESETS[sweep.preset]
    budgets = sorted(sweep.budgets)
    step = budgets[-1] / budgets[-2] if len(budgets) > 1 else 2.0
    budget = budgets[-1] * step
    n_target = float(fit.n_opt(budget))
    base = sweep.base_config["model"]
    batch = sweep.base_config.get("batch_size", preset.batch_size)

    def n_of(shape):
        return param_count(GPTConfig(**{**base, "n_layer": shape.n_layer, "n_head": shape.n_head,
                                         "n_embd": shape.n_embd}), non_embedding=True)

    shape = min(preset.shapes, key=lambda s: abs(math.log(n_of(s) / n_target)))
    cfg = GPTConfig(**{**base, "n_layer": shape.n_layer, "n_head": shape.n_head, "n_embd": shape.n_embd})
    fpt = flops_per_token(cfg)
    steps = max(1, round(budget / (fpt * batch * cfg.block_size)))
    n = param_count(cfg, non_embedding=True)
    tokens = steps * batch * cfg.block_size
    row = scaling.GridRow(budget=budget, n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd, params=n,
                          flops_per_token=fpt, batch_size=batch, block_size=cfg.block_size, steps=steps,
                          tokens=tokens, tokens_per_param=tokens / n, flops=float(tokens * fpt),
                          seconds=steps * preset.step_s + tokens * fpt / preset.flops_per_s)
    forecast = fit.loss.predict(budget)
    with transaction.atomic():
        locked = Sweep.objects.select_for_update().get(pk=sweep.pk)
        if locked.prediction:
            raise TrainingError(_("this sweep already has its prediction run (#%(run)s)")
                                % {"run": locked.prediction.get("run")})
        run = run_create(owner=sweep.owner, corpus=sweep.corpus, tokenizer=sweep.tokenizer,
                         model_config=cfg.to_dict(), train_config=_train_config(preset, row),
                         name=_run_name(sweep.name, row, prediction=True),
                         data={"corpus": sweep.corpus.name, "tokenizer": sweep.tokenizer.name})
        Run.objects.filter(pk=run.pk).update(sweep=locked)
        locked.grid = list(locked.grid) + [row.to_dict() | {"run": run.pk, "prediction": True}]
        locked.prediction = forecast | {"run": run.pk, "params": n, "n_opt": n_target}
        locked.save(update_fields=["grid", "prediction"])
    return locked


# ----------------------------------------------------------------------------------------------------------------------
# reads


def sweep_list(*, user):
    qs = Sweep.objects.select_related("owner", "corpus", "tokenizer")
    if user is None or not user.is_authenticated:
        return qs.none()
    return qs if user.is_staff else qs.filter(owner=user)


def sweep_get(*, sweep_id, user) -> Sweep:
    try:
        return sweep_list(user=user).get(pk=int(sweep_id))
    except (Sweep.DoesNotExist, TypeError, ValueError):
        raise SweepNotFound(_("there is no sweep #%(id)s that you can see") % {"id": str(sweep_id)[:20]}) from None


def sweep_points(*, sweep: Sweep) -> list[dict]:
    """The grid's finished runs as fit input: {"budget", "params", "tokens", "loss", "run"}, the loss being the run's
    final validation loss. The prediction run is left out: it checks the fit, it is not part of it."""
    rows = {r["run"]: r for r in sweep.grid if not r.get("prediction")}
    done = Run.objects.filter(pk__in=rows, status=Run.Status.SUCCEEDED, val_loss__isnull=False)
    return [{"budget": rows[r.pk]["budget"], "params": rows[r.pk]["params"], "tokens": rows[r.pk]["tokens"],
             "loss": r.val_loss, "run": r.pk} for r in done.order_by("pk")]


def sweep_summary(*, sweep: Sweep) -> dict:
    """What the sweep page shows: a table row per grid row (with its run's state), the fit as JSON for the charts,
    the problems that keep parts of it from being fitted yet, and the prediction with its outcome."""
    runs = {r.pk: r for r in sweep.runs.all()}
    table = []
    for row in sweep.grid:
        run = runs.get(row["run"])
        table.append(row | {"run_obj": run, "status": run.status if run else "deleted",
                            "val_loss": run.val_loss if run else None})
    points = sweep_points(sweep=sweep)
    fit = scaling.sweep_fit(points)
    fit_dict = fit.to_dict()
    outcome = None
    if sweep.prediction:
        run = runs.get(sweep.prediction["run"])
        if run is not None and run.status == Run.Status.SUCCEEDED and run.val_loss is not None:
            inside = sweep.prediction["low"] <= run.val_loss <= sweep.prediction["high"]
            outcome = {"loss": run.val_loss, "inside": inside,
                       "error": run.val_loss - sweep.prediction["loss"]}
    statuses = [r.status for r in runs.values()]
    next_budget = None
    if sweep.budgets:
        b = sorted(sweep.budgets)
        next_budget = b[-1] * (b[-1] / b[-2] if len(b) > 1 else 2.0)
    return {
        "table": table,
        "status": sweep.status_of(statuses),
        "finished": sum(s == Run.Status.SUCCEEDED for s in statuses),
        "total": len(statuses),
        "points": points,
        "fit": fit_dict,
        "problems": _problems(fit),
        "prediction": sweep.prediction,
        "outcome": outcome,
        "next_budget": next_budget,
        "forecast": fit.loss.predict(next_budget) if fit.loss is not None and next_budget else None,
        "chinchilla": scaling.CHINCHILLA,
    }
