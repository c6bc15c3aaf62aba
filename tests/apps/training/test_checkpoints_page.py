"""The run page's checkpoints: the order said, the best by val loss marked and promoted by the primary button, and
a rule (against the unigram baseline the worker measured) saying when a checkpoint is worth trying."""

import math
import re

import numpy as np
import pytest

from apps.training import lease, selectors
from apps.training.models import Checkpoint, Run
from tests.training_fixtures import make_run

pytestmark = pytest.mark.django_db


def checkpoints(run, losses: dict[int, float]):
    for step, val in losses.items():
        Checkpoint.objects.create(run=run, step=step, val_loss=val, path=f"runs/{run.pk}/ckpt-{step:06d}.safetensors")


def page(client, run) -> str:
    return client.get(f"/training/runs/{run.pk}/").content.decode()


def test_the_list_says_newest_first_and_marks_the_best_by_val_loss(client, user, run):
    checkpoints(run, {100: 2.9, 200: 2.1, 300: 2.3})
    client.force_login(user)
    html = page(client, run)
    section = html[html.index('id="run-checkpoints"'):]
    assert "newest first" in section
    assert re.findall(r'data-step="(\d+)"', section) == ["300", "200", "100"]
    best_row = re.search(r'<tr data-step="(\d+)" class="best"', section)
    assert best_row and best_row.group(1) == "200" and section.count('class="badge ok">best<') == 1
    # the primary button promotes the best, not the newest
    best = Checkpoint.objects.get(run=run, step=200)
    button = re.search(r'action="([^"]+)"[^>]*>\s*<input[^>]*>\s*<button class="button primary"[^>]*>([^<]+)', section)
    assert button and button.group(1) == f"/models/promote/{best.pk}/" and "Promote the best (step 200)" in button.group(2)


def test_a_checkpoint_is_worth_trying_at_a_third_of_the_unigram_perplexity(client, user, run):
    Run.objects.filter(pk=run.pk).update(data={**run.data, "baselines": {"unigram": 3.29}}, status="running")
    run.refresh_from_db()
    checkpoints(run, {100: 2.9, 200: 2.5})
    client.force_login(user)
    threshold = 3.29 - math.log(3)  # 2.19
    advice = selectors.checkpoint_advice(run=run, checkpoints=run.checkpoints.all())
    assert advice["threshold"] == pytest.approx(threshold) and not advice["ready"]
    html = page(client, run)
    assert "Not worth trying yet." in html and "below 2.19" in html and "loss 3.29 on this data" in html
    assert "Training goes on" in html
    checkpoints(run, {300: 2.15, 400: 2.0})
    html = page(client, run)
    assert "Good enough to try since step 300." in html and 'class="ckpt-advice ready"' in html


def test_runs_without_a_measured_baseline_judge_against_the_uniform_guess(client, user, run):
    checkpoints(run, {100: 1.0})
    vocab = run.model_config["vocab_size"]
    advice = selectors.checkpoint_advice(run=run, checkpoints=run.checkpoints.all())
    assert advice["threshold"] == pytest.approx(0.55 * math.log(vocab)) and advice["unigram"] is None
    assert advice["ready"] == (1.0 <= 0.55 * math.log(vocab))


def test_a_stopped_run_that_never_got_there_says_what_to_do(client, user, run):
    Run.objects.filter(pk=run.pk).update(data={**run.data, "baselines": {"unigram": 3.0}}, status="succeeded")
    checkpoints(run, {100: 2.9})
    client.force_login(user)
    assert "fork its last checkpoint with more steps" in page(client, run)


def test_the_worker_records_the_unigram_baseline_under_its_lease(user, run):
    from workers.gpt.data import unigram_loss

    Run.objects.filter(pk=run.pk).update(lease_token="t" * 32, status="preparing", data={"corpus": "Tiny"})
    ids = np.array([0, 1, 1, 2] * 50, dtype=np.uint16)
    loss = unigram_loss(ids, ids, run.model_config["vocab_size"])
    lease.run_record_baselines(run_id=run.pk, token="wrong", baselines={"unigram": 9.9})
    run.refresh_from_db()
    assert "baselines" not in run.data
    lease.run_record_baselines(run_id=run.pk, token="t" * 32, baselines={"unigram": loss})
    run.refresh_from_db()
    assert run.data["baselines"]["unigram"] == pytest.approx(loss) and run.data["corpus"] == "Tiny"  # the rest kept
