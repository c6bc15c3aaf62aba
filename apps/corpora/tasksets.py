"""Task sets: the Data page's third kind of corpus, problems a program can check (workers.gpt.tasks), for GRPO runs
and generate-then-check evaluation.

A task set is a Corpus of kind "tasks" whose file is JSONL, one problem a line, each with its split:
    {"prompt", "answer", "match", "task", "split": "train"|"held_out", "meta": {...}}
made either by a seeded generator (arithmetic, countdown, letters) or from an upload ({"prompt", "answer",
optional "match"}, validated by tasks.problems_from_jsonl: the first bad line is named and nothing is saved).
stats["task"] = {"generator", "difficulty", "seed", "n_train", "n_heldout", "instruction"} (the shared schema;
"instruction" is tasks.INSTRUCTIONS' key, absent on older sets and uploads). Standard library
only, like workers.gpt.tasks: the web side uses it.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.utils.translation import gettext as _

from apps.corpora.models import Corpus
from apps.corpora.text import CorpusInputError
from workers.gpt import tasks

MAX_PROBLEMS = 20_000  # per split, generated
SAMPLE_PROBLEMS = 8


def taskset_generate(*, owner, name: str, task: str, difficulty: int, seed: int, n_train: int, n_heldout: int,
                     description: str = "", instruction: str = "think") -> Corpus:
    """A task set of n_train + n_heldout generated problems (a pure function of task, difficulty and seed)."""
    for label, n in (("n_train", n_train), ("n_heldout", n_heldout)):
        if not isinstance(n, int) or not 1 <= n <= MAX_PROBLEMS:
            raise CorpusInputError(_("%(label)s (%(n)s) must be from 1 to %(max)s problems")
                                   % {"label": label, "n": n, "max": f"{MAX_PROBLEMS:,}"})
    try:
        train = tasks.task_problems(task, split="train", n=n_train, difficulty=difficulty, seed=seed,
                                    instruction=instruction)
        held_out = tasks.task_problems(task, split="held_out", n=n_heldout, difficulty=difficulty, seed=seed,
                                       instruction=instruction)
    except tasks.TaskError as exc:
        raise CorpusInputError(str(exc)) from None
    info = {"generator": task, "difficulty": difficulty, "seed": seed, "n_train": n_train, "n_heldout": n_heldout,
            "instruction": instruction}
    return _save(owner=owner, name=name, description=description, splits={"train": train, "held_out": held_out},
                 info=info)


def taskset_upload(*, owner, name: str, data: bytes, description: str = "") -> Corpus:
    """A task set from uploaded JSONL problems; split into train and held-out by a hash of each prompt."""
    if len(data) > settings.CORPUS_MAX_BYTES:
        raise CorpusInputError(_("The file is %(mb).1f MB, over the limit for a data set: upload fewer problems.")
                               % {"mb": len(data) / 1024 / 1024}, status=413)
    try:
        problems = tasks.problems_from_jsonl(data)
    except tasks.TaskError as exc:
        raise CorpusInputError(_("The problems were not saved: %(why)s") % {"why": exc}) from None
    splits = tasks.split_problems(problems)
    if not splits["train"]:
        raise CorpusInputError(_("Every problem landed in the held-out split: upload at least a few more problems "
                                 "so some are left to train on."))
    info = {"generator": "upload", "difficulty": None, "seed": None, "n_train": len(splits["train"]),
            "n_heldout": len(splits["held_out"])}
    return _save(owner=owner, name=name, description=description, splits=splits, info=info)


def _save(*, owner, name: str, description: str, splits: dict, info: dict) -> Corpus:
    name = name.strip()
    if not name:
        raise CorpusInputError(_("Give the task set a name."))
    lines = [json.dumps({"prompt": p.prompt, "answer": p.answer, "match": p.match, "task": p.task, "split": split,
                         "meta": p.metadata}, ensure_ascii=False)
             for split, problems in splits.items() for p in problems]
    text = "\n".join(lines) + "\n"
    answers = [p.answer for problems in splits.values() for p in problems]
    stats = {"task": info, "n_problems": len(lines),
             "mean_prompt_chars": sum(len(p.prompt) for ps in splits.values() for p in ps) / max(len(lines), 1),
             "distinct_answers": len(set(answers))}
    return Corpus.objects.create_with_file(text.encode("utf-8"), suffix=".jsonl", name=name[:100],
                                           description=description.strip(), owner=owner, kind=Corpus.Kind.TASKS,
                                           n_chars=len(text), n_lines=len(lines), stats=stats, val_fraction=0.0)


def taskset_problems(*, corpus: Corpus, split: str) -> list[tasks.Problem]:
    """The problems of one split ("train" or "held_out") of a task set, in file order."""
    if corpus.kind != Corpus.Kind.TASKS:
        raise CorpusInputError(_("%(name)s is not a task set: choose a data set of kind tasks") % {"name": corpus})
    out = []
    with open(corpus.file, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj.get("split", "train") == split:
                out.append(tasks.Problem(obj["prompt"], obj["answer"], obj.get("task", "upload"),
                                         obj.get("match", "numeric"), obj.get("meta") or {}))
    return out


def taskset_sample(*, corpus: Corpus, n: int = SAMPLE_PROBLEMS) -> dict:
    """A few problems of each split with their answers, for the data set's page."""
    return {split: taskset_problems(corpus=corpus, split=split)[:n] for split in tasks.SPLITS}
