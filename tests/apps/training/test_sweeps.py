"""Scaling sweeps: the plan becomes ordinary queued runs (or nothing, with a reason), the pages show the grid and
the fits, and finished runs with known synthetic losses give back the exponents that made them."""

import math
import re

import numpy as np
import pytest

from apps.corpora import services as corpora_services
from apps.training import sweeps
from apps.training.models import Run, Sweep
from apps.training.services import TrainingError
from tests.data_fixtures import TINY_TEXT
from tests.training_fixtures import make_run
from workers.gpt import scaling

pytestmark = pytest.mark.django_db

TINY = scaling.TINY_PRESET.key


def test_a_sweep_creates_one_queued_pretraining_run_per_grid_row(user, tiny_corpus, char_tok):
    sweep = sweeps.sweep_create(owner=user, corpus=tiny_corpus, tokenizer=char_tok, preset_key=TINY,
                                budgets=[5e8, 1e9])
    runs = list(sweep.runs.order_by("pk"))
    assert len(runs) == len(sweep.grid) == 6
    assert all(r.kind == Run.Kind.PRETRAIN and r.status == Run.Status.QUEUED and r.owner == user for r in runs)
    assert [r.pk for r in runs] == [row["run"] for row in sweep.grid]
    for run, row in zip(runs, sweep.grid):
        assert run.model_config["n_embd"] == row["n_embd"] and run.max_steps == row["steps"]
        # the steps spend the budget to within half a step
        spent = row["steps"] * row["batch_size"] * row["block_size"] * row["flops_per_token"]
        assert abs(spent - row["budget"]) <= 0.5 * row["batch_size"] * row["block_size"] * row["flops_per_token"]
    assert sweep.status == Sweep.Status.QUEUED


def test_it_refuses_a_budget_too_small_for_any_size_and_creates_nothing(user, tiny_corpus, char_tok):
    with pytest.raises(TrainingError, match="add smaller shapes or raise the budget") as exc:
        sweeps.sweep_create(owner=user, corpus=tiny_corpus, tokenizer=char_tok, preset_key=TINY, budgets=[1e6])
    assert exc.value.field == "budgets"
    assert not Sweep.objects.exists() and not Run.objects.exists()


def test_it_refuses_more_runs_than_the_setting_allows(user, tiny_corpus, char_tok, settings):
    settings.TRAINING_SWEEP_MAX_RUNS = 5
    with pytest.raises(TrainingError, match="at most 5 are allowed"):
        sweeps.sweep_create(owner=user, corpus=tiny_corpus, tokenizer=char_tok, preset_key=TINY)
    assert not Run.objects.exists()


def test_it_refuses_another_users_corpus(user, other_user, char_tok):
    theirs = corpora_services.corpus_create(name="Theirs", description="", owner=other_user, text=TINY_TEXT)
    with pytest.raises(TrainingError, match="not yours") as exc:
        sweeps.sweep_create(owner=user, corpus=theirs, tokenizer=char_tok, preset_key=TINY, budgets=[5e8])
    assert exc.value.field == "corpus" and not Sweep.objects.exists()


# ----------------------------------------------------------------------------------------------------------------------
# the fit, fed synthetic losses

A_TRUE, K_TRUE = 0.5, 0.05  # N_opt = K·C^A


def synthetic_sweep(user, corpus, tokenizer, budgets=(1e12, 2e12, 4e12, 8e12, 1.6e13)):
    """A sweep whose runs finished with losses that are a parabola in log10 N around N_opt = K·C^A, the floor
    falling as 2·(C/1e12)^-0.2 + 1. Runs are made directly: the selector reads the grid and the runs' losses."""
    sweep = Sweep.objects.create(owner=user, name="synthetic", preset=TINY, corpus=corpus, tokenizer=tokenizer,
                                 budgets=list(budgets), base_config={"model": scaling.TINY_PRESET.base(
                                     vocab_size=tokenizer.n_vocab), "batch_size": 8})
    grid, rng = [], np.random.default_rng(0)
    for C in budgets:
        x_opt = math.log10(K_TRUE * C**A_TRUE)
        for dx in (-0.5, -0.25, 0.0, 0.25, 0.5):
            n = 10 ** (x_opt + dx)
            run = make_run(user, corpus, tokenizer)
            Run.objects.filter(pk=run.pk).update(
                sweep=sweep, status=Run.Status.SUCCEEDED,
                val_loss=2 * (C / 1e12) ** -0.2 + 1 + 0.8 * dx**2 + rng.normal(0, 0.002))
            grid.append({"budget": C, "params": n, "tokens": C / (6 * n), "tokens_per_param": C / (6 * n * n),
                         "n_layer": 1, "n_head": 2, "n_embd": 16, "steps": 100, "run": run.pk})
    sweep.grid = grid
    sweep.save()
    return sweep


def test_finished_runs_with_synthetic_losses_give_back_the_exponents(user, tiny_corpus, char_tok):
    summary = sweeps.sweep_summary(sweep=synthetic_sweep(user, tiny_corpus, char_tok))
    fit = summary["fit"]
    assert len(fit["isoflops"]) == 5 and summary["status"] == Sweep.Status.SUCCEEDED
    assert abs(fit["n_opt"]["exponent"] - A_TRUE) < max(3 * fit["n_opt"]["exponent_err"], 0.02)
    assert abs(fit["d_opt"]["exponent"] - (1 - A_TRUE)) < max(3 * fit["d_opt"]["exponent_err"], 0.02)
    assert abs(fit["loss"]["b"] - 0.2) < 0.05 and abs(fit["loss"]["c"] - 1.0) < 0.1
    # D/N at C = 1.6e13: (C/6N)/N with N = K·C^A
    n = K_TRUE * 1.6e13**A_TRUE
    assert fit["tokens_per_param"] == pytest.approx(1.6e13 / (6 * n * n), rel=0.1)
    assert summary["forecast"]["low"] < summary["forecast"]["loss"] < summary["forecast"]["high"]


def test_the_prediction_queues_one_flagged_run_at_the_next_budget(user, tiny_corpus, char_tok):
    sweep = synthetic_sweep(user, tiny_corpus, char_tok)
    sweep = sweeps.sweep_predict(sweep=sweep, user=user)
    p = sweep.prediction
    assert p["budget"] == pytest.approx(3.2e13) and p["low"] < p["loss"] < p["high"]
    run = Run.objects.get(pk=p["run"])
    assert run.sweep_id == sweep.pk and run.status == Run.Status.QUEUED and sweep.grid[-1]["prediction"]
    # the prediction run is not a point of the fit, and a second click is refused
    assert p["run"] not in [pt["run"] for pt in sweeps.sweep_points(sweep=sweep)]
    with pytest.raises(TrainingError, match="already has its prediction"):
        sweeps.sweep_predict(sweep=sweep, user=user)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, val_loss=p["loss"] + 0.001)
    outcome = sweeps.sweep_summary(sweep=sweep)["outcome"]
    assert outcome["loss"] == pytest.approx(p["loss"] + 0.001)


def test_another_user_may_not_extend_a_sweep(user, other_user, tiny_corpus, char_tok):
    sweep = synthetic_sweep(user, tiny_corpus, char_tok)
    with pytest.raises(TrainingError, match="belongs to another user"):
        sweeps.sweep_predict(sweep=sweep, user=other_user)


# ----------------------------------------------------------------------------------------------------------------------
# views


def test_the_preview_shows_the_grid_before_launch(client, user, tiny_corpus, char_tok):
    client.force_login(user)
    response = client.post("/training/sweeps/preview/", {"corpus": tiny_corpus.pk, "tokenizer": char_tok.pk,
                                                         "preset": TINY, "budgets": "5e8, 1e9", "per_budget": "3"})
    html = response.content.decode()
    assert response.status_code == 200 and html.count('<tr data-budget="') == 6
    assert "a guess" in html and "tokens/param" in html
    assert not Run.objects.exists()


def test_the_preview_says_why_there_is_no_grid(client, user, tiny_corpus, char_tok):
    client.force_login(user)
    html = client.post("/training/sweeps/preview/", {"corpus": tiny_corpus.pk, "tokenizer": char_tok.pk,
                                                     "preset": TINY, "budgets": "1e6"}).content.decode()
    assert "raise the budget" in html and "<tr data-budget" not in html
    html = client.post("/training/sweeps/preview/", {"corpus": tiny_corpus.pk, "tokenizer": char_tok.pk,
                                                     "preset": TINY, "budgets": "lots"}).content.decode()
    assert "numbers separated by commas" in html


def test_launching_redirects_to_the_sweep_page_which_renders_with_no_results(client, user, tiny_corpus, char_tok):
    client.force_login(user)
    response = client.post("/training/sweeps/new/", {"corpus": tiny_corpus.pk, "tokenizer": char_tok.pk,
                                                     "preset": TINY, "budgets": "5e8"})
    sweep = Sweep.objects.get()
    assert response.status_code == 302 and response.url == f"/training/sweeps/{sweep.pk}/"
    html = client.get(response.url).content.decode()
    assert "0 of 3 runs finished" in html and "Not fitted yet" in html and "3 model size(s)" not in html
    assert "the power laws need 3 budgets" in html and 'id="chart-isoflop"' in html


def test_a_bad_launch_is_a_400_and_creates_nothing(client, user, tiny_corpus, char_tok):
    client.force_login(user)
    response = client.post("/training/sweeps/new/", {"corpus": tiny_corpus.pk, "tokenizer": char_tok.pk,
                                                     "preset": TINY, "budgets": "1e6"})
    assert response.status_code == 400 and "raise the budget" in response.content.decode()
    assert not Sweep.objects.exists()


def test_the_sweep_page_renders_partial_results_and_the_fit_json(client, user, tiny_corpus, char_tok):
    sweep = synthetic_sweep(user, tiny_corpus, char_tok)
    Run.objects.filter(pk=sweep.grid[-1]["run"]).update(status=Run.Status.RUNNING, val_loss=None)
    client.force_login(user)
    html = client.get(f"/training/sweeps/{sweep.pk}/").content.decode()
    assert "24 of 25 runs finished" in html and "Chinchilla" in html
    assert re.search(r'class="fit-a">a = 0\.(4[6-9]|5[0-4])\d ± 0\.0\d\d', html)
    assert "Run it: train the predicted optimal model" in html
    data = client.get(f"/training/sweeps/{sweep.pk}/fit.json").json()
    assert len(data["points"]) == 24 and len(data["fit"]["isoflops"]) == 5
    partial = client.get(f"/training/sweeps/{sweep.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in partial and "24 of 25" in partial


def test_another_users_sweep_is_a_404(client, user, other_user, tiny_corpus, char_tok):
    sweep = synthetic_sweep(user, tiny_corpus, char_tok)
    client.force_login(other_user)
    assert client.get(f"/training/sweeps/{sweep.pk}/").status_code == 404
    assert client.get(f"/training/sweeps/{sweep.pk}/fit.json").status_code == 404
    assert client.post(f"/training/sweeps/{sweep.pk}/predict/").status_code == 404


def test_the_training_page_lists_the_users_sweeps(client, user, other_user, tiny_corpus, char_tok):
    sweep = sweeps.sweep_create(owner=user, corpus=tiny_corpus, tokenizer=char_tok, preset_key=TINY, budgets=[5e8])
    client.force_login(user)
    assert f'href="/training/sweeps/{sweep.pk}/"' in client.get("/training/").content.decode()
    client.force_login(other_user)
    assert f'href="/training/sweeps/{sweep.pk}/"' not in client.get("/training/").content.decode()
