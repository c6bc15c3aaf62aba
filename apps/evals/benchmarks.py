"""The evaluation sets bundled with LLM Lab, named in code (not rows): each is a file in the repository or a task
generated from a seed, with its licence beside it. Tasks-kind corpora (the Data page) are the other source of
problems for generate-then-check; text corpora are what a loss evaluation reads.

Torch-free: the web side lists these in the form and checks requests against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.utils.translation import gettext_lazy as _

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Benchmark:
    key: str
    name: str
    method: str  # "choice" | "generate"
    description: str
    licence: str
    splits: tuple[str, ...]
    path: Path | None = None  # a JSONL file of {"context", "choices", "answer"} (choice)
    task: str = ""  # a workers.gpt.tasks generator (generate)
    difficulty: int = 1
    chance: float | None = None  # the score of guessing, for the page


BENCHMARKS: dict[str, Benchmark] = {b.key: b for b in (
    Benchmark(
        key="shakespeare-words", name=_("Shakespeare words"), method="choice", splits=("val",),
        path=ROOT / "data" / "evals" / "shakespeare-words.jsonl", chance=0.25,
        description="Which of four words ends a line of Shakespeare, by log-likelihood (the HellaSwag / ARC method). "
                    "Lines from the validation part of the corpus; chance is 25 %.",
        licence="MIT (the problems, this repository); the Shakespeare text is public domain (data/evals/README.md)"),
    Benchmark(
        key="arithmetic-1", name=_("Arithmetic, small numbers"), method="generate", splits=("held_out", "train"),
        task="arithmetic", difficulty=1,
        description="“What is 23 - 7?”: a sum or a non-negative difference of two numbers from 0 to 30, the answer "
                    "checked as a number (about 290 held-out problems).",
        licence="generated here, seed 0 (MIT)"),
    Benchmark(
        key="arithmetic-2", name=_("Arithmetic, two digits"), method="generate", splits=("held_out", "train"),
        task="arithmetic", difficulty=2,
        description="“What is 48 + 17?”: one operator between two-digit numbers.",
        licence="generated here, seed 0 (MIT)"),
    Benchmark(
        key="letters-1", name=_("Letter counting"), method="generate", splits=("held_out", "train"),
        task="letters", difficulty=1,
        description="“How many times does the letter r appear in strawberry?”, words from the Shakespeare corpus.",
        licence="generated here, seed 0 (MIT); words from public-domain Shakespeare"),
)}


def benchmarks_for(method: str) -> list[Benchmark]:
    return [b for b in BENCHMARKS.values() if b.method == method]
