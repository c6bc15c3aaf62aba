"""The real path for GRPO: a run submitted through the service goes through Redis to a real Celery train worker,
which dispatches on run.kind to the GRPO glue, trains a tiny model for a few steps, and registers <base>-grpo."""

import pytest

from apps.evals.models import Evaluation
from apps.registry.models import Model
from apps.training import grpo as grpo_app
from apps.training.models import Metric, Rollout, Run
from tests.conftest import wait_for
from tests.grpo_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import train_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def test_a_grpo_run_trains_on_a_real_worker_and_registers_its_model(processes, user, tiny_model, arithmetic_set):
    run = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set, lora=False,
                                   grpo_config=dict(steps=3, prompts_per_step=2, group_size=3, max_new_tokens=4,
                                                    learning_rate=1e-3, flat_steps=0))
    worker = train_worker(processes, "train@grpo")
    wait_for(lambda: Run.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout=180,
             what="the GRPO run to finish", proc=worker)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.reason
    assert list(Metric.objects.filter(run=run).values_list("step", flat=True)) == [1, 2, 3]
    assert Rollout.objects.filter(run=run).count() == 3
    heldout = run.data["heldout"]  # the evaluation jobs of the base model and of the result, on the infer queue
    assert Evaluation.objects.get(pk=heldout["after"]).model == Model.objects.get(run=run)
    assert Evaluation.objects.get(pk=heldout["before"]).model == tiny_model
    assert Model.objects.get(run=run).name == "tiny-chat-grpo" and run.worker == "train@grpo"
