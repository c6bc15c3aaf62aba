"""Evaluations as a worker leaves them, for the pages' tests (tests/apps/evals, tests/every_page.py)."""

from apps.evals.models import Evaluation
from apps.system import files


def finished(model, *, score, low, high, task_key="generate:benchmark:arithmetic-2:held_out", dataset="Arithmetic",
             method="generate", answers=None, owner=None, n=100):
    """A succeeded evaluation with its result (and its answers file when given)."""
    e = Evaluation.objects.create(
        model=model, owner=owner, method=method, benchmark="arithmetic-2", dataset=dataset, task_key=task_key,
        split="held_out", n=n, status=Evaluation.Status.SUCCEEDED, progress=1.0,
        results={"metric": "loss" if method == "loss" else "pass@1", "score": score, "low": low, "high": high, "n": n,
                 "metrics": {}})
    if answers is not None:
        path = files.artifact_path("evals", e.pk, "answers.json")
        files.write_json(path, {"answers": answers})
        e.answers_path = files.artifact_relative(path)
        e.save()
    return e
