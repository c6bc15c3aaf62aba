"""Reads for evaluations: who sees which, the problems a job scores (torch-free: the service checks a request with
them and the worker scores them), a job's state for pages and events, its answers, and the lineage table ("what
each step changed": one model's chain base -> sft -> grpo with the same evals side by side)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _

from apps.corpora.models import Corpus
from apps.evals.benchmarks import BENCHMARKS, Benchmark
from apps.evals.models import Evaluation
from apps.registry.models import Model
from workers.gpt import tasks as tasklib

LINEAGE_MAX_MODELS = 8  # a chain longer than this is cut (and Model.base could, in a damaged database, loop)


class EvalError(ValueError):
    """A request that cannot be done; the message says why and what to do instead. status is the HTTP code."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


# ----------------------------------------------------------------------------------------------------------------------
# who sees what


def evaluation_list(*, user) -> QuerySet[Evaluation]:
    """Evaluations of the models the user may see: a published model's results are everyone's."""
    return Evaluation.objects.filter(model__in=Model.objects.visible_to(user)).select_related("model", "corpus",
                                                                                            "owner")


def evaluation_get(*, evaluation_id, user) -> Evaluation:
    try:
        return evaluation_list(user=user).get(pk=int(evaluation_id))
    except (Evaluation.DoesNotExist, TypeError, ValueError):
        raise EvalError(_("There is no evaluation #%(id)s that you can see.") % {"id": str(evaluation_id)[:20]},
                        status=404) from None


def evaluations_for_model(*, model: Model) -> list[Evaluation]:
    """Every evaluation of a model, newest first (the caller has already checked the user may see the model)."""
    return list(Evaluation.objects.filter(model=model).select_related("corpus", "owner"))


def evaluation_may_control(*, evaluation: Evaluation, user) -> bool:
    return bool(user is not None and user.is_authenticated and (user.is_staff or evaluation.owner_id == user.id))


def datasets_for(*, user) -> dict[str, list[dict]]:
    """What the form offers per method: {"loss": [...], "choice": [...], "generate": [...]}, each {"value", "label",
    "splits"}; value is "corpus:<id>" or "benchmark:<key>"."""
    corpora = Corpus.objects.visible_to(user).filter(kind__in=[Corpus.Kind.TEXT, Corpus.Kind.TASKS])
    out = {"loss": [], "choice": [], "generate": []}
    for c in corpora:
        if c.kind == Corpus.Kind.TEXT:
            out["loss"].append({"value": f"corpus:{c.pk}", "label": c.name, "splits": ["val", "train"]})
        else:
            out["generate"].append({"value": f"corpus:{c.pk}", "label": c.name, "splits": ["held_out", "train"]})
    for b in BENCHMARKS.values():
        out[b.method].append({"value": f"benchmark:{b.key}", "label": str(b.name), "splits": list(b.splits),
                              "licence": b.licence})
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the problems a job scores


@dataclass
class ChoiceProblem:
    context: str
    choices: list[str]
    answer: int

    def to_dict(self) -> dict:
        return {"context": self.context, "choices": self.choices, "answer": self.answer}


def task_key(*, method: str, corpus: Corpus | None, benchmark: Benchmark | None, split: str, k: int = 1) -> str:
    """What makes two evaluations comparable: the same method on the same data set and split (and k)."""
    source = f"corpus:{corpus.pk}" if corpus is not None else f"benchmark:{benchmark.key}"
    return f"{method}:{source}:{split}" + (f":k{k}" if k > 1 else "")


def benchmark_problems(benchmark: Benchmark, *, split: str, n: int, seed: int = 0) -> list:
    """The first n problems of a bundled benchmark's split: ChoiceProblems for multiple choice, tasks.Problems for
    generated tasks. EvalError when the split has fewer than n."""
    if benchmark.method == "choice":
        problems = []
        with open(benchmark.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    problems.append(ChoiceProblem(obj["context"], list(obj["choices"]), int(obj["answer"])))
        if len(problems) < n:
            raise EvalError(_("%(name)s has %(count)s problems: ask for at most %(count)s.")
                            % {"name": benchmark.name, "count": len(problems)}, field="n")
        return problems[:n]
    try:
        return tasklib.task_problems(benchmark.task, split=split, n=n, difficulty=benchmark.difficulty, seed=seed)
    except tasklib.TaskError as e:
        raise EvalError(str(e), field="n") from None


def corpus_task_problems(corpus: Corpus, *, split: str) -> list[tasklib.Problem]:
    """The problems of a tasks-kind corpus's split. Each JSONL line is {"prompt", "answer", "match"?, "meta"?}
    (the shared schema); a line's "split" (or meta.split) places it, and a file without any says nothing, so its
    problems are split by a hash of the prompt (workers.gpt.tasks.split_problems: never overlapping)."""
    try:
        raw = corpus.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(_("The data set %(name)s cannot be read (%(why)s): upload it again.")
                        % {"name": corpus.name, "why": e}, status=409) from None
    problems, placed = [], []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            meta = obj.get("meta") or obj.get("metadata") or {}
            answer = str(obj["answer"]).strip()
            match = obj.get("match") or ("numeric" if tasklib.last_number(answer) == answer.replace(",", "")
                                         else "exact")
            if match not in tasklib.MATCHES:
                raise ValueError(f"unknown match {match!r}")
            if match == "countdown" and not {"numbers", "target"} <= set(meta):
                raise ValueError("a countdown problem needs meta.numbers and meta.target")
            problem = tasklib.Problem(prompt=str(obj["prompt"]), answer=answer,
                                      task=meta.get("task") or corpus.stats.get("task", {}).get("generator", "upload"),
                                      match=match, metadata=dict(meta))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise EvalError(_("Line %(line)s of %(name)s is not a problem (%(why)s): fix the data set.")
                            % {"line": number, "name": corpus.name, "why": e}, status=409) from None
        problems.append(problem)
        placed.append(obj.get("split") or meta.get("split"))
    if any(placed):
        return [p for p, s in zip(problems, placed) if (s or "train") == split]
    return tasklib.split_problems(problems)[split]


def problems_for(*, method: str, corpus: Corpus | None, benchmark: Benchmark | None, split: str, n: int,
                 seed: int = 0) -> list:
    """The n problems an evaluation scores (choice or generate); EvalError if the data set has fewer."""
    if benchmark is not None:
        return benchmark_problems(benchmark, split=split, n=n, seed=seed)
    problems = corpus_task_problems(corpus, split=split)
    if len(problems) < n:
        raise EvalError(_("%(name)s has %(count)s problems in its %(split)s split: ask for at most %(count)s.")
                        % {"name": corpus.name, "count": len(problems), "split": split}, field="n")
    return problems[:n]


def corpus_split_text(corpus: Corpus, *, split: str, max_chars: int | None = None) -> str:
    """The text of a text corpus's split ("val": from the split point to the end; "train": before it)."""
    text = corpus.file.read_text(encoding="utf-8")
    at = corpus.split.get("char", len(text))
    part = text[at:] if split == "val" else text[:at]
    return part[:max_chars] if max_chars else part


def evaluation_problems(evaluation: Evaluation) -> list:
    """The problems a queued evaluation scores (what the worker reads)."""
    benchmark = BENCHMARKS.get(evaluation.benchmark) if evaluation.benchmark else None
    if evaluation.corpus_id is None and benchmark is None:
        raise EvalError(_("The data set of this evaluation was deleted."), status=410)
    return problems_for(method=evaluation.method, corpus=evaluation.corpus, benchmark=benchmark,
                        split=evaluation.split, n=evaluation.n, seed=evaluation.seed)


def prompt_ids(problem: tasklib.Problem, *, model: Model, tokenizer) -> list[int]:
    """prompt_text as token ids: what an evaluation scores and what a GRPO run trains on read the same tokens."""
    return tokenizer.encode(prompt_text(problem, model=model, tokenizer=tokenizer), allow_special=True)


def prompt_text(problem: tasklib.Problem, *, model: Model, tokenizer) -> str:
    """What the model reads for a problem: a chat model gets it as a user turn through its chat template (with the
    generation prompt that opens the assistant's turn), a base model the raw prompt."""
    if not model.chat_template:
        return problem.prompt
    from workers.gpt.chat import render_chat

    specials = {i: s for s, i in getattr(tokenizer, "special_tokens", {}).items()}
    return render_chat(model.chat_template, [{"role": "user", "content": problem.prompt}], add_generation_prompt=True,
                       bos_token=specials.get(getattr(tokenizer, "bos_id", None), ""),
                       eos_token=specials.get(getattr(tokenizer, "eos_id", None), ""))


# ----------------------------------------------------------------------------------------------------------------------
# what pages and events show


def evaluation_view(e: Evaluation) -> dict:
    """A job's state as a page shows it and an event carries it (JSON-safe, small)."""
    r = e.results or {}
    return {
        "id": e.pk, "model_id": e.model_id, "method": e.method, "method_label": e.get_method_display(),
        "dataset": e.dataset, "split": e.split, "n": e.n, "k": e.k, "temperature": e.temperature,
        "status": e.status, "active": e.status in Evaluation.ACTIVE, "phase": e.phase, "done": e.done,
        "percent": round(100 * (e.progress or 0)), "eta_seconds": e.eta_seconds, "error": e.error,
        "cancel_requested": e.cancel_requested, "owner_id": e.owner_id, "notes": e.notes or [],
        "metric": r.get("metric", ""), "score": r.get("score"), "low": r.get("low"), "high": r.get("high"),
        "scored": r.get("n"), "metrics": r.get("metrics", {}), "lower_is_better": e.lower_is_better,
        "has_answers": bool(e.answers_path), "created": e.created.isoformat() if e.created else None,
    }


def evaluation_answers(*, evaluation: Evaluation, show: str = "all") -> list[dict]:
    """The per-problem answers (prompt, expected, answer(s), correct, reward), from the job's answers file; show
    "right" or "wrong" keeps only those."""
    path = evaluation.answers_file
    if path is None or not path.exists():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))["answers"]
    if show == "right":
        return [r for r in rows if r["correct"]]
    if show == "wrong":
        return [r for r in rows if not r["correct"]]
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# what each step changed


def lineage_chain(model: Model) -> list[Model]:
    """The model and its ancestors through Model.base, oldest first: base -> sft -> grpo."""
    chain, seen = [model], {model.pk}
    while chain[-1].base_id is not None and len(chain) < LINEAGE_MAX_MODELS:
        base = Model.objects.filter(pk=chain[-1].base_id).first()
        if base is None or base.pk in seen:
            break
        chain.append(base)
        seen.add(base.pk)
    return chain[::-1]


def lineage_table(*, model: Model, user=None) -> dict:
    """The same evaluations side by side for a model and its lineage chain, with what each step changed.

    Returns {"models": [Model, ...] (oldest first), "rows": [{"task_key", "label", "method", "lower_is_better",
    "cells": [None | {"evaluation_id", "score", "low", "high", "n", "delta", "better", "overlap"}]}]}. A row is a
    task (method + data set + split + k); each cell is that model's latest succeeded evaluation of it; delta is the
    change from the previous model in the chain that has one, better says whether it improved, and overlap whether
    the two 95 % intervals overlap (then the change may be chance). Models the user may not see are left out."""
    chain = lineage_chain(model)
    if user is not None:
        visible = set(Model.objects.visible_to(user).filter(pk__in=[m.pk for m in chain]).values_list("pk", flat=True))
        chain = [m for m in chain if m.pk in visible]
    latest: dict[tuple[str, int], Evaluation] = {}
    done = (Evaluation.objects.filter(model__in=chain, status=Evaluation.Status.SUCCEEDED)
            .order_by("created", "id"))
    for e in done:
        latest[(e.task_key, e.model_id)] = e  # later ones win
    keys = sorted({key for key, _ in latest}, key=lambda k: (k.split(":")[0], k))
    rows = []
    for key in keys:
        cells, previous = [], None
        sample = next(e for (k, _), e in latest.items() if k == key)
        for m in chain:
            e = latest.get((key, m.pk))
            if e is None:
                cells.append(None)
                continue
            r = e.results
            cell = {"evaluation_id": e.pk, "score": r.get("score"), "low": r.get("low"), "high": r.get("high"),
                    "n": r.get("n"), "delta": None, "better": None, "overlap": None}
            if previous is not None and cell["score"] is not None and previous["score"] is not None:
                cell["delta"] = cell["score"] - previous["score"]
                cell["better"] = (cell["delta"] < 0) if e.lower_is_better else (cell["delta"] > 0)
                if None not in (cell["low"], cell["high"], previous["low"], previous["high"]):
                    cell["overlap"] = cell["low"] <= previous["high"] and previous["low"] <= cell["high"]
            cells.append(cell)
            previous = cell
        rows.append({"task_key": key, "label": _row_label(sample), "method": sample.method,
                     "metric": sample.results.get("metric", ""), "lower_is_better": sample.lower_is_better,
                     "cells": cells})
    return {"models": chain, "rows": rows}


def _row_label(e: Evaluation) -> str:
    k = f", k={e.k}" if e.k > 1 else ""
    return f"{e.dataset} ({e.split}{k})"


def evaluations_running(*, model: Model) -> QuerySet[Evaluation]:
    return Evaluation.objects.filter(Q(model=model) & Q(status__in=Evaluation.ACTIVE))


def may_evaluate(*, model: Model, user) -> bool:
    """Who may evaluate a model: whoever may use it (signed in, the model visible to them and not archived)."""
    return bool(user is not None and user.is_authenticated
                and Model.objects.usable_by(user).filter(pk=model.pk).exists())


def model_section(*, model: Model, user) -> dict:
    """Everything the Evaluations section of a model's page shows."""
    evaluations = evaluations_for_model(model=model)
    table = lineage_table(model=model, user=user)
    return {
        "model": model, "evaluations": [evaluation_view(e) for e in evaluations],
        "user_id": getattr(user, "id", None), "is_staff": bool(getattr(user, "is_staff", False)),
        "may_evaluate": may_evaluate(model=model, user=user), "datasets": datasets_for(user=user),
        "table": table if len(table["models"]) > 1 else None,
        "methods": Evaluation.Method.choices,
    }


def run_model(*, run, user) -> Model | None:
    """The model a run's page compares: the newest one it produced, else the one it started from (visible ones)."""
    visible = Model.objects.visible_to(user)
    produced = visible.filter(run=run).order_by("-created", "-id").first()
    if produced is not None:
        return produced
    base_id = getattr(run, "base_model_id", None)
    return visible.filter(pk=base_id).first() if base_id else None
