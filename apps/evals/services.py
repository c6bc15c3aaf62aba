"""Writes for evaluations: create (every check before anything is saved), cancel, and what the infer worker reports
(start, progress, finish, fail). Views, other apps' pages (an SFT or GRPO run asking for before/after evals) and the
worker glue (workers/evals.py) all come through here.

    evaluation_create(user=u, model=m, method="generate", benchmark="arithmetic-2", split="held_out", n=200, k=4)

A request that cannot be scored is refused with EvalError (its status is the HTTP code) and creates nothing: an
unknown or private model, a data set of the wrong kind for the method, n or k out of range, or a generate
evaluation whose prompts do not fit the model's context (refused, not cropped: a cropped question is a different
question). Multiple choice crops a long context from the left, as lm-evaluation-harness does, and says how many.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.corpora.models import Corpus
from apps.evals import realtime
from apps.evals.benchmarks import BENCHMARKS
from apps.evals.models import Evaluation
from apps.evals.selectors import EvalError, evaluation_view, problems_for, prompt_text, task_key
from apps.registry.models import Model
from apps.system.realtime import publish
from apps.system.services import job_request_cancel
from apps.tokenization.selectors import tokenizer_from_spec

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 512
DEFAULT_SAMPLING_TEMPERATURE = 0.8  # pass@k with k > 1 samples; k = 1 is greedy


def evaluation_create(*, user, model, method: str, corpus=None, benchmark: str | None = None, split: str, n: int,
                      k: int = 1, temperature: float | None = None, max_new_tokens: int = 64,
                      seed: int = 0) -> Evaluation:
    """Queue an evaluation of `model` (a Model, or its id or slug) on a corpus (a Corpus or its id) or a bundled
    benchmark (its key). Everything is checked first; EvalError (status 400/403/404) leaves nothing behind."""
    if user is None or not user.is_authenticated:
        raise EvalError(_("Sign in to run an evaluation: anyone may read the results of published models."),
                        status=403)
    model = _usable_model(model, user)
    if method not in Evaluation.Method.values:
        raise EvalError(_("Unknown method %(method)r: choose loss, choice or generate.") % {"method": str(method)[:20]},
                        field="method")
    corpus, bench = _dataset(user=user, method=method, corpus=corpus, benchmark=benchmark)
    splits = _splits(method=method, corpus=corpus, benchmark=bench)
    if split not in splits:
        raise EvalError(_("Split %(split)r does not exist here: choose %(choices)s.")
                        % {"split": str(split)[:20], "choices": " or ".join(splits)}, field="split")
    n = _int(n, "n")
    limit = settings.EVALS_MAX_TOKENS if method == Evaluation.Method.LOSS else settings.EVALS_MAX_PROBLEMS
    what = _("tokens") if method == Evaluation.Method.LOSS else _("problems")
    if not 1 <= n <= limit:
        raise EvalError(_("n (%(n)s) must be between 1 and %(limit)s %(what)s (EVALS_MAX_%(setting)s).")
                        % {"n": n, "limit": limit, "what": what,
                           "setting": "TOKENS" if method == Evaluation.Method.LOSS else "PROBLEMS"}, field="n")
    k = _int(k, "k")
    if k != 1 and method != Evaluation.Method.GENERATE:
        raise EvalError(_("k (samples per problem) applies only to generate-then-check evaluations: use k = 1."),
                        field="k")
    if not 1 <= k <= settings.EVALS_MAX_K:
        raise EvalError(_("k (%(k)s) must be between 1 and %(max)s (EVALS_MAX_K).")
                        % {"k": k, "max": settings.EVALS_MAX_K}, field="k")
    if temperature is None:
        temperature = DEFAULT_SAMPLING_TEMPERATURE if k > 1 else 0.0
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise EvalError(_("temperature must be a number."), field="temperature") from None
    if k > 1 and not 0 < temperature <= 2:
        raise EvalError(_("pass@k with k > 1 needs different samples: temperature (%(t)s) must be above 0 and at "
                          "most 2 (0.8 is usual).") % {"t": temperature}, field="temperature")
    if k == 1 and temperature != 0:
        raise EvalError(_("With k = 1 the answer is greedy (temperature 0); ask for k > 1 to sample."),
                        field="temperature")
    max_new_tokens = _int(max_new_tokens, "max_new_tokens")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise EvalError(_("max_new_tokens (%(m)s) must be between 1 and %(max)s.") % {"m": max_new_tokens,
                                                                                    "max": MAX_NEW_TOKENS},
                        field="max_new_tokens")
    if method == Evaluation.Method.LOSS:
        _check_text(corpus, split=split)
    else:
        problems = problems_for(method=method, corpus=corpus, benchmark=bench, split=split, n=n, seed=seed)
        if method == Evaluation.Method.GENERATE:
            _check_prompts_fit(model=model, problems=problems, max_new_tokens=max_new_tokens)
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            model=model, owner=user, method=method, corpus=corpus, benchmark=bench.key if bench else "",
            dataset=corpus.name if corpus is not None else str(bench.name),
            task_key=task_key(method=method, corpus=corpus, benchmark=bench, split=split, k=k), split=split, n=n,
            k=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, phase=_("waiting for a worker"))
        transaction.on_commit(lambda: _enqueue(evaluation.pk))
    return evaluation


def _usable_model(ref, user) -> Model:
    """A model the user may use (evaluating is using): visible to them and not archived. Someone else's draft looks
    absent (404), as on the Models page."""
    qs = Model.objects.usable_by(user)
    found = None
    if isinstance(ref, Model):
        found = qs.filter(pk=ref.pk).first()
    elif isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        found = qs.filter(pk=int(ref)).first()
    elif isinstance(ref, str) and ref:
        found = qs.filter(slug=ref).first()
    if found is None:
        label = ref.slug if isinstance(ref, Model) else str(ref)[:60]
        raise EvalError(_("There is no model %(ref)r that you may use: pick one from the Models page.")
                        % {"ref": label}, status=404, field="model")
    return found


def _dataset(*, user, method, corpus, benchmark):
    if (corpus is None) == (not benchmark):
        raise EvalError(_("Choose one data set: a corpus or a bundled benchmark."), field="dataset")
    if benchmark:
        bench = BENCHMARKS.get(str(benchmark))
        if bench is None:
            raise EvalError(_("There is no bundled benchmark %(key)r: choose one of %(keys)s.")
                            % {"key": str(benchmark)[:40], "keys": ", ".join(BENCHMARKS)}, status=404, field="dataset")
        if bench.method != method:
            raise EvalError(_("%(name)s is scored by %(its)s, not %(method)s: pick that method, or another data set.")
                            % {"name": bench.name, "its": bench.method, "method": method}, field="dataset")
        return None, bench
    pk = corpus.pk if isinstance(corpus, Corpus) else corpus
    row = Corpus.objects.visible_to(user).filter(pk=pk).first() if str(pk).isdigit() else None
    if row is None:
        raise EvalError(_("There is no data set #%(pk)s that you can see.") % {"pk": str(pk)[:20]}, status=404,
                        field="dataset")
    wanted = {Evaluation.Method.LOSS: Corpus.Kind.TEXT, Evaluation.Method.GENERATE: Corpus.Kind.TASKS}.get(method)
    if wanted is None:
        raise EvalError(_("Multiple choice runs on a bundled benchmark (%(keys)s), not on a corpus.")
                        % {"keys": ", ".join(b.key for b in BENCHMARKS.values() if b.method == "choice")},
                        field="dataset")
    if row.kind != wanted:
        hint = (_("a loss evaluation reads a text corpus") if method == Evaluation.Method.LOSS
                else _("a generate-then-check evaluation needs a task set with a checker (a tasks data set, or a "
                       "bundled task such as arithmetic)"))
        raise EvalError(_("%(name)s is a %(kind)s data set, but %(hint)s.") % {"name": row.name, "kind": row.kind,
                                                                               "hint": hint}, field="dataset")
    return row, None


def _splits(*, method, corpus, benchmark) -> tuple[str, ...]:
    if benchmark is not None:
        return benchmark.splits
    return ("val", "train") if method == Evaluation.Method.LOSS else ("held_out", "train")


def _int(value, name: str) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise EvalError(_("%(name)s must be a whole number.") % {"name": name}, field=name) from None


def _check_text(corpus: Corpus, *, split: str) -> None:
    at = corpus.split.get("char")
    total = corpus.n_chars
    size = (total - at) if (split == "val" and at is not None) else (at if at is not None else total)
    if split == "val" and at is None:
        size = 0
    if size < 2:
        raise EvalError(_("%(name)s has no %(split)s text to score: pick the other split or another corpus.")
                        % {"name": corpus.name, "split": split}, field="split")


def _check_prompts_fit(*, model: Model, problems: list, max_new_tokens: int) -> None:
    """Refuse a generate evaluation whose prompts (as the model reads them) leave less than max_new_tokens of the
    context, or that the model's tokenizer cannot encode: an answer with no room, or a question the model cannot
    read, scores nothing."""
    from workers.gpt.chat import ChatTemplateError
    from workers.gpt.tokenizers import TokenizerError

    try:
        tok = tokenizer_from_spec(spec=model.tokenizer_spec)
    except (KeyError, OSError, TokenizerError) as e:
        raise EvalError(_("%(model)s's tokenizer cannot be loaded (%(why)s).") % {"model": model.name, "why": e},
                        status=409) from None
    block = model.block_size
    longest, too_long = 0, 0
    for i, p in enumerate(problems, start=1):
        try:
            ids = tok.encode(prompt_text(p, model=model, tokenizer=tok), allow_special=True)
        except (TokenizerError, ChatTemplateError) as e:
            raise EvalError(_("%(model)s cannot read problem %(i)s: %(why)s. Pick a model whose tokenizer covers the "
                              "task's text.") % {"model": model.name, "i": i, "why": e}, field="dataset") from None
        longest = max(longest, len(ids))
        too_long += len(ids) + max_new_tokens > block
    if too_long:
        room = block - longest
        hint = (_("lower max new tokens to %(room)s or less, or") % {"room": room}) if room > 0 else ""
        raise EvalError(_("%(count)s of the %(n)s prompts do not fit: the longest is %(longest)s tokens, and with "
                          "%(new)s new tokens that needs more than %(model)s's context of %(block)s tokens. Refused "
                          "rather than cropped (a cropped question is another question): %(hint)s pick a model with "
                          "a longer context.")
                        % {"count": too_long, "n": len(problems), "longest": longest, "new": max_new_tokens,
                           "model": model.name, "block": block, "hint": hint}, field="max_new_tokens")


def _enqueue(evaluation_id: int) -> None:
    from workers.tasks import evaluation_run as evaluation_run_task

    result = evaluation_run_task.delay(evaluation_id)
    Evaluation.objects.filter(pk=evaluation_id).update(task_id=result.id or "")


def evaluation_cancel(*, evaluation: Evaluation, user) -> Evaluation:
    """Ask a queued or running evaluation to stop: its owner or staff. A queued one is cancelled at once; a running
    one stops at its next batch and keeps nothing."""
    if not (user is not None and user.is_authenticated and (user.is_staff or evaluation.owner_id == user.id)):
        raise EvalError(_("Only the person who started this evaluation (or staff) may cancel it."), status=403)
    evaluation, _active = job_request_cancel(Evaluation, evaluation.pk)
    _publish_state(evaluation)
    return evaluation


# ----------------------------------------------------------------------------------------------------------------------
# what the worker reports


def evaluation_start(*, evaluation_id: int, worker: str) -> Evaluation | None:
    """Mark a queued evaluation running; None if it is gone, cancelled or already taken (a second delivery)."""
    with transaction.atomic():
        e = Evaluation.objects.select_for_update().filter(pk=evaluation_id).first()
        if e is None or e.status != Evaluation.Status.QUEUED:
            return None
        e.status, e.started, e.worker = Evaluation.Status.RUNNING, timezone.now(), worker
        e.phase = _("loading the model")
        e.save()
    _publish_state(e)
    return e


def evaluation_phase(*, evaluation_id: int, phase: str) -> None:
    Evaluation.objects.filter(pk=evaluation_id).update(phase=phase, updated=timezone.now())
    _publish(evaluation_id, realtime.progress_event)


def evaluation_record_progress(*, evaluation_id: int, done: int, total: int, elapsed: float) -> bool:
    """Record how far a running job is (problems or tokens done of total); returns whether it should stop."""
    fraction = done / total if total else 0.0
    eta = elapsed * (total - done) / done if done else None
    Evaluation.objects.filter(pk=evaluation_id).update(done=done, progress=fraction, eta_seconds=eta,
                                                       phase=_("scoring"), updated=timezone.now())
    _publish(evaluation_id, realtime.progress_event)
    return Evaluation.objects.filter(pk=evaluation_id, cancel_requested=True).exists()


def evaluation_finish(*, evaluation_id: int, results: dict, notes: list[str], answers_path: str) -> Evaluation:
    Evaluation.objects.filter(pk=evaluation_id).update(
        status=Evaluation.Status.SUCCEEDED, results=results, notes=notes, answers_path=answers_path, progress=1.0,
        eta_seconds=0, phase="", finished=timezone.now(), updated=timezone.now())
    return _publish(evaluation_id, realtime.state_event)


def evaluation_fail(*, evaluation_id: int, error: str) -> Evaluation:
    Evaluation.objects.filter(pk=evaluation_id).update(status=Evaluation.Status.FAILED, error=error[:4000], phase="",
                                                       finished=timezone.now(), updated=timezone.now())
    return _publish(evaluation_id, realtime.state_event)


def evaluation_mark_cancelled(*, evaluation_id: int) -> Evaluation:
    Evaluation.objects.filter(pk=evaluation_id).update(status=Evaluation.Status.CANCELLED, phase="",
                                                       finished=timezone.now(), updated=timezone.now())
    return _publish(evaluation_id, realtime.state_event)


def _publish(evaluation_id: int, make_event) -> Evaluation | None:
    e = Evaluation.objects.filter(pk=evaluation_id).first()
    if e is not None:
        view = evaluation_view(e)
        publish(realtime.model_group(e.model_id), make_event(view))
        publish(realtime.evaluation_group(e.pk), make_event(view))
    return e


def _publish_state(e: Evaluation) -> None:
    view = evaluation_view(e)
    publish(realtime.model_group(e.model_id), realtime.state_event(view))
    publish(realtime.evaluation_group(e.pk), realtime.state_event(view))


def evaluation_repeat(*, user, evaluation: Evaluation, model) -> Evaluation:
    """The same evaluation (method, data set, split, n, k, temperature, max new tokens, seed) of another model: how
    a fine-tuning or RL run asks for its "after" numbers next to the base model's "before"."""
    return evaluation_create(user=user, model=model, method=evaluation.method, corpus=evaluation.corpus,
                             benchmark=evaluation.benchmark or None, split=evaluation.split, n=evaluation.n,
                             k=evaluation.k, temperature=evaluation.temperature,
                             max_new_tokens=evaluation.max_new_tokens, seed=evaluation.seed)


def lineage_fill(*, user, model) -> tuple[list[Evaluation], list[str]]:
    """Queue every evaluation missing from `model`'s lineage table (a model of the chain with no result on a row
    that another model has), skipping those already queued or running. Returns (queued, reasons for the ones that
    could not be)."""
    from apps.evals.selectors import lineage_table

    table = lineage_table(model=model, user=user)
    queued, refused = [], []
    for row in table["rows"]:
        sample = Evaluation.objects.get(pk=next(c for c in row["cells"] if c)["evaluation_id"])
        for m, cell in zip(table["models"], row["cells"]):
            if cell is not None or Evaluation.objects.filter(model=m, task_key=row["task_key"],
                                                             status__in=Evaluation.ACTIVE).exists():
                continue
            try:
                queued.append(evaluation_repeat(user=user, evaluation=sample, model=m))
            except EvalError as e:
                refused.append(f"{m.name}, {row['label']}: {e}")
    return queued, refused
