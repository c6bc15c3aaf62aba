"""An evaluation from the queue to the result with a real Celery infer worker (and Redis), as the page starts one."""

import json

import pytest

from apps.evals import services
from apps.evals.models import Evaluation
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_an_infer_worker_scores_a_tiny_model_on_a_few_problems(processes, user, tiny, tasks_corpus):
    worker = processes.worker("infer", "infer@evals")
    e = services.evaluation_create(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out",
                                   n=4, k=2, max_new_tokens=4)
    e.refresh_from_db()
    assert e.task_id  # queued on commit

    def done():
        row = Evaluation.objects.get(pk=e.pk)
        return row if row.status not in Evaluation.ACTIVE else None

    row = wait_for(done, timeout=180, what="the evaluation to finish", proc=worker)
    assert row.status == "succeeded", row.error
    assert row.worker and row.results["n"] == 4 and set(row.results["metrics"]) == {"pass@1", "pass@2", "ended"}
    answers = json.loads(row.answers_file.read_text())["answers"]
    assert [len(a["answers"]) for a in answers] == [2, 2, 2, 2]
