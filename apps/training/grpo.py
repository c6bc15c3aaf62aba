"""GRPO runs (reinforcement learning with verifiable rewards) as the training app sees them: create one from a
registry model and a task set, estimate its time per step on each train worker, and read its rollouts.

A GRPO run is an ordinary Run (kind "grpo": same queue, lease, cancel and resume) whose base_model is the registry
model it starts from and whose corpus is a task set. train_config holds {"max_steps", "grpo": GRPOConfig.to_dict(),
"lora", "lora_r", "pass_k", "n_eval"}; model_config is the base model's GPTConfig; data["heldout"] holds the ids of
its before/after evaluation jobs (below). workers/reinforce.py trains it.
"""

from __future__ import annotations

import functools

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from apps.training import estimates, selectors, services
from apps.training.models import Rollout, Run, RunEvent
from apps.training.services import TrainingError
from workers.gpt.config import ConfigError, GPTConfig, flops_per_token
from workers.gpt.grpo_config import GRPOConfig
from apps.corpora.models import Corpus
from apps.corpora.tasksets import taskset_problems
from apps.evals.models import Evaluation
from apps.evals.selectors import EvalError, evaluation_view, prompt_ids
from apps.evals.services import evaluation_create, evaluation_repeat
from apps.registry.models import Model
from apps.system.realtime import publish
from apps.tokenization.selectors import tokenizer_from_spec
from apps.training import lease, realtime

ROLLOUT_STEPS_KEPT = 20  # the sampled groups of this many recent steps are kept for the dashboard
PASS_K = 4  # pass@k on the held-out split before and after
N_EVAL = 100  # held-out problems evaluated before and after (the first ones of the split)
# The estimate's fractions of peak where no GRPO run of the shape has timed its steps on the device yet (shown as a
# model with a wide range). Decoding is a fraction that grows with the rows decoded at once: one row reads every
# weight per token, 32 rows share the read. Measured on 2 CPU cores with SmolLM2-135M (fractions of the best
# 1024x1024 matmul): a decode step 0.03 at 1 row, 0.17 at 8, 0.30 at 32; the prefill of 32 45-token prompts
# 0.7; the update (forward + backward over 32 sequences of 61-77 tokens) 0.55-1.0. The GPU figures are not
# measured (no GPU has been lent to this project): a small model's decode there is bound by kernel launches.
DECODE_MFU_GUESS = {"cpu": 0.3, "cuda": 0.01, "mps": 0.01}  # at DECODE_FULL_ROWS rows or more
DECODE_FULL_ROWS = 32  # below, the fraction scales with sqrt(rows / DECODE_FULL_ROWS)
TRAIN_MFU_GUESS = {"cpu": 0.6, "cuda": 0.15, "mps": 0.15}
PROMPTS_MEASURED = 64  # problems of the task set whose prompts the estimate tokenizes


def grpo_check_base_model(*, model, user):
    """The registry model a user may start GRPO from: published ones, and their own drafts. Refuses another
    user's private model (and archived ones) with why."""

    if model is None:
        raise TrainingError(_("Choose a model to start from."), field="base_model")
    if not model.__class__.objects.usable_by(user).filter(pk=model.pk).exists():
        if model.status == Model.Status.ARCHIVED:
            raise TrainingError(_("%(name)s is archived: choose a published model or one of yours.")
                                % {"name": model.name}, field="base_model")
        raise TrainingError(_("%(name)s is another user's private model: you may start from published models and "
                              "your own.") % {"name": model.name}, field="base_model")
    return model


def grpo_run_create(*, owner, base_model, corpus, grpo_config: dict, lora: bool = True, lora_r: int = 8,
                    name: str = "", pass_k: int = PASS_K, n_eval: int = N_EVAL, enqueue: bool = True) -> Run:
    """A queued GRPO run. Checks (ConfigError / TrainingError name the field): the base model is the user's to use,
    the corpus is a task set with train problems, the GRPO settings are valid (G >= 2 with why)."""

    grpo_check_base_model(model=base_model, user=owner)
    if corpus is None or corpus.kind != Corpus.Kind.TASKS:
        raise TrainingError(_("Choose a task set (a data set of kind tasks): GRPO needs problems with a checker."),
                            field="corpus")
    if not corpus.__class__.objects.visible_to(owner).filter(pk=corpus.pk).exists():
        raise TrainingError(_("That task set is another user's."), field="corpus")
    task = corpus.stats.get("task", {})
    if not task.get("n_train"):
        raise TrainingError(_("%(name)s has no train problems: generate or upload some.") % {"name": corpus.name},
                            field="corpus")
    cfg = GRPOConfig.from_dict(dict(grpo_config))
    cfg.validate()
    model_cfg = GPTConfig.from_dict(dict(base_model.config))
    if cfg.max_new_tokens >= model_cfg.block_size:
        raise ConfigError("max_new_tokens", _("max_new_tokens (%(n)s) must be below the model's context "
                                              "(block_size %(b)s), which also holds the prompt")
                          % {"n": cfg.max_new_tokens, "b": model_cfg.block_size})
    if lora and not 1 <= lora_r <= 256:
        raise ConfigError("lora_r", _("lora_r (%(r)s) must be from 1 to 256, e.g. 8") % {"r": lora_r})
    if not 1 <= pass_k <= 64:
        raise ConfigError("pass_k", _("pass_k (%(k)s) must be from 1 to 64") % {"k": pass_k})
    train_config = {"max_steps": cfg.steps, "grpo": cfg.to_dict(), "lora": bool(lora), "lora_r": int(lora_r),
                    "pass_k": int(pass_k), "n_eval": min(int(n_eval), int(task.get("n_heldout") or 0))}
    data = {"corpus": corpus.name, "tokenizer": base_model.tokenizer.name if base_model.tokenizer else "",
            "base_model": base_model.name, "task": task}
    with transaction.atomic():
        run = Run.objects.create(
            owner=owner, name=(name.strip() or _("%(model)s · GRPO on %(corpus)s") % {"model": base_model.name,
                                                                                    "corpus": corpus.name})[:100],
            kind=Run.Kind.GRPO, base_model=base_model, corpus=corpus, tokenizer=base_model.tokenizer, data=data,
            model_config=model_cfg.to_dict(), train_config=train_config, queued=timezone.now())
        services.note(run, gettext_noop("Queued: GRPO from %(model)s on %(corpus)s, G=%(g)s, %(steps)s steps."),
                      {"model": base_model.name, "corpus": corpus.name, "g": cfg.group_size, "steps": cfg.steps})
        heldout_before(run=run)
        if enqueue:
            services.enqueue_on_commit(run.pk)
    return run


def grpo_estimate(*, model_config: dict, grpo_config: GRPOConfig, prompt_tokens: float, workers: list[dict],
                  lora: bool = True, lora_r: int = 8) -> list[dict]:
    """Time per GRPO step and for the whole run on each live train worker (estimates.worker_times rows). Measured
    ms/step of earlier GRPO runs of the same shape on that device win; else a FLOPs model of one step with every
    answer max_new_tokens long (a batch stops once all its answers have ended, so steps whose answers are short
    take less): sampling (the prompts' prefill, then prompts x G rows decoded together, each at a guessed fraction of
    the device's peak) plus the update (a forward and backward over the rows' prompt_tokens + max_new_tokens,
    repeated num_iterations times, and a reference forward when beta > 0)."""
    # attention's FLOPs grow with the context actually used (prompt + answer), not with the model's block_size
    used = min(int(model_config["block_size"]), round(prompt_tokens) + grpo_config.max_new_tokens)
    cfg = GPTConfig.from_dict(dict(model_config) | {"block_size": used})
    rows = grpo_config.prompts_per_step * grpo_config.group_size
    rows_at_once = rows // grpo_config.grad_accum
    fpt = flops_per_token(cfg)  # forward + backward, per token (6N-ish); a forward is a third
    prefill_flops = fpt / 3 * rows * prompt_tokens
    decode_flops = fpt / 3 * rows * grpo_config.max_new_tokens
    seq_tokens = rows * used
    update_flops = fpt * seq_tokens * grpo_config.num_iterations + (fpt / 3 * seq_tokens if grpo_config.beta else 0)
    step_seconds = {}
    for w in workers:
        kind = (w.get("device") or {}).get("kind", "cpu")
        peak = getattr(w.get("profile"), "peak_flops", None)
        if not peak:
            step_seconds[w["name"]] = None
            continue
        dense = peak * TRAIN_MFU_GUESS.get(kind, 0.15)  # prefill and update: matmuls over many tokens at once
        decode = peak * DECODE_MFU_GUESS.get(kind, 0.01) * min(1.0, rows_at_once / DECODE_FULL_ROWS) ** 0.5
        step_seconds[w["name"]] = (prefill_flops + update_flops) / dense + decode_flops / decode
    shape = estimates.shape_key(kind=Run.Kind.GRPO, model_config=GPTConfig.from_dict(dict(model_config)).to_dict(),
                                train_config={"grpo": grpo_config.to_dict(), "lora": bool(lora),
                                              "lora_r": int(lora_r)})
    out = estimates.worker_times(workers=workers, steps=grpo_config.steps, step_seconds=step_seconds,
                                 measured=selectors.step_times(shape=shape, kind=Run.Kind.GRPO))
    return [row | {"prompt_tokens": prompt_tokens} for row in out]


def prompt_tokens(*, model: Model, corpus: Corpus) -> float:
    """The mean length in tokens of the task set's train prompts as this model reads them (its chat template
    included), over the first PROMPTS_MEASURED problems. Cached per model, task set and file."""
    return _prompt_tokens(model.pk, corpus.pk, str(corpus.file), model.updated.isoformat())


@functools.lru_cache(maxsize=64)
def _prompt_tokens(model_id: int, corpus_id: int, path: str, version: str) -> float:
    model, corpus = Model.objects.get(pk=model_id), Corpus.objects.get(pk=corpus_id)
    tokenizer = tokenizer_from_spec(spec=model.tokenizer_spec)
    problems = taskset_problems(corpus=corpus, split="train")[:PROMPTS_MEASURED]
    lengths = [len(prompt_ids(p, model=model, tokenizer=tokenizer)) for p in problems]
    return sum(lengths) / len(lengths) if lengths else 0.0


def rollout_list(*, run: Run, steps: int = 5) -> list[Rollout]:
    """The sampled groups of the run's most recent steps, newest first."""
    return list(run.rollouts.order_by("-step")[:steps])


def grpo_history(*, run: Run) -> dict:
    """What the run page draws for a GRPO run: per-step extras and the before/after held-out evaluation."""
    rows = [[m.step, m.loss, m.extra] for m in run.metrics.order_by("step")]
    return {"steps": rows, "evaluation": heldout_views(run=run)}


# ----------------------------------------------------------------------------------------------------------------------
# held-out pass@1 and pass@k before and after: evaluation jobs of the evals app (on the infer queue), of the base
# model when the run is queued and of the registered <base>-grpo when it ends, with the same settings (so the two
# are one row of the "what each step changed" table). run.data["heldout"] holds their ids: {"before", "after"}, or
# {"skipped": why} when the task set's held-out prompts cannot be evaluated with this model.


def heldout_before(*, run: Run) -> None:
    """Queue (or reuse: the same base model, task set and settings measured already) the "before" evaluation."""
    tc, cfg = run.train_config, GRPOConfig.from_dict(dict(run.train_config["grpo"]))
    if not tc.get("n_eval"):
        return
    k = int(tc.get("pass_k", PASS_K))
    settings = dict(method="generate", corpus=run.corpus, split="held_out", n=int(tc["n_eval"]), k=k,
                    temperature=cfg.temperature if k > 1 else 0.0, max_new_tokens=cfg.max_new_tokens,
                    seed=cfg.seed + 1)
    try:
        same = (Evaluation.objects.filter(model=run.base_model, status__in=(*Evaluation.ACTIVE,
                                                                             Evaluation.Status.SUCCEEDED))
                .filter(**{f: v for f, v in settings.items() if f != "method"}, method="generate")
                .order_by("-created").first())
        before = same or evaluation_create(user=run.owner, model=run.base_model, **settings)
    except EvalError as exc:
        _heldout_set(run, {"skipped": str(exc)})
        services.note(run, gettext_noop("Held-out accuracy will not be measured: %(why)s"), {"why": str(exc)},
                      kind=RunEvent.Kind.WARNING)
        return
    _heldout_set(run, {"before": before.pk})
    services.note(run, gettext_noop("Held-out accuracy before training: evaluation #%(id)s of %(model)s, %(n)s "
                                    "problems, pass@1 and pass@%(k)s."),
                  {"id": before.pk, "model": run.base_model.name, "n": before.n, "k": k})


def heldout_after(*, run_id: int, token: str, model) -> bool:
    """Queue the "after" evaluation: the "before" one repeated on `model` (what the run registered). False when this
    worker no longer holds the run."""
    run = Run.objects.filter(pk=run_id, lease_token=token).first()
    if run is None:
        return False
    before = Evaluation.objects.filter(pk=(run.data.get("heldout") or {}).get("before")).first()
    if before is None:
        return True
    try:
        after = evaluation_repeat(user=run.owner, evaluation=before, model=model)
    except EvalError as exc:
        lease.run_note(run_id=run_id, token=token, kind=RunEvent.Kind.WARNING,
                       message=gettext_noop("Held-out accuracy after training was not measured: %(why)s"),
                       params={"why": str(exc)})
        return True
    _heldout_set(run, {**run.data.get("heldout", {}), "after": after.pk})
    lease.run_note(run_id=run_id, token=token, message=gettext_noop("Held-out accuracy after training: evaluation "
                                                                    "#%(id)s of %(model)s, queued."),
                   params={"id": after.pk, "model": model.name})
    return True


def heldout_views(*, run: Run) -> dict:
    """{"before", "after"}: each an evaluation as the held-out panel shows it (status, progress, pass@1 with its
    95 % interval, pass@k), or None; "skipped": why there are none; "active": whether the panel should poll."""
    ids = dict(run.data.get("heldout") or {})
    found = {e.pk: e for e in Evaluation.objects.filter(pk__in=[ids.get("before"), ids.get("after")])}
    out = {"skipped": ids.get("skipped", "")}
    for which in ("before", "after"):
        e = found.get(ids.get(which))
        if e is None:
            out[which] = None
            continue
        view = evaluation_view(e)
        passk = (view["metrics"].get(f"pass@{e.k}") or {}) if e.k > 1 else {"value": view["score"]}
        out[which] = view | {"pass1": view["score"], "pass1_low": view["low"], "pass1_high": view["high"],
                             "passk": passk.get("value")}
        if view["score"] is not None:  # the bar the panel draws, in percent of the axis (0-100 %)
            out[which]["bar"] = {"pass1": 100 * view["score"], "low": 100 * view["low"],
                                 "width": 100 * (view["high"] - view["low"]),
                                 "passk": 100 * passk["value"] if passk.get("value") is not None else None}
    out["rows"] = [("before", out["before"]), ("after", out["after"])]
    out["active"] = run.is_active or any(out[w] and out[w]["active"] for w in ("before", "after"))
    return out


def _heldout_set(run: Run, heldout: dict) -> None:
    run.data = {**run.data, "heldout": heldout}
    Run.objects.filter(pk=run.pk).update(data=run.data)


# ----------------------------------------------------------------------------------------------------------------------
# what the worker's glue reports (workers/reinforce.py), under the run's lease


def rollout_record(*, run_id: int, token: str, rollouts: list[tuple[int, list[dict]]],
                   keep: int = ROLLOUT_STEPS_KEPT) -> bool:
    """Write the sampled groups of some steps (upserted by (run, step)), drop all but the newest `keep` steps, then
    publish each. False when this worker no longer holds the run."""

    if not rollouts:
        return True
    with transaction.atomic():
        if not Run.objects.filter(pk=run_id, lease_token=token).exists():
            return False
        for step, groups in rollouts:
            Rollout.objects.update_or_create(run_id=run_id, step=step, defaults={"groups": groups})
        kept = list(Rollout.objects.filter(run_id=run_id).order_by("-step").values_list("step", flat=True)[:keep])
        Rollout.objects.filter(run_id=run_id).exclude(step__in=kept).delete()
    for step, groups in rollouts:
        publish(realtime.run_group(run_id), realtime.rollout_event(run_id, step=step, groups=groups))
    return True
