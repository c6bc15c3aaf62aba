"""The pages: run list, dashboard, cancel/resume/fork forms, compare, metrics JSON — and that another user's run is
invisible (404, not a hint that it exists)."""

import json

import pytest

from apps.training import lease
from apps.training.models import Checkpoint, Run
from tests.training_fixtures import make_run

pytestmark = pytest.mark.django_db


def claim(run):
    return lease.run_claim(run_id=run.pk, worker="train@a", device={"kind": "cpu", "name": "Test CPU",
                                                                      "cores": 2}).lease_token


def record(run, token, steps, evals=()):
    rows = [[s, 4.0 - s / 10, 1e-3, 0.5, 10.0, 1000.0, 0.2, s * 0.1] for s in steps]
    lease.run_record(run_id=run.pk, token=token, steps=rows, evals=[list(e) for e in evals],
                        samples=[(e[0], f"sample at {e[0]} <b>&</b>") for e in evals],
                        progress={"step": max(steps), "elapsed": 2.0, "latest": {"loss": 3.1, "lr": 1e-3}})


def test_the_run_list_shows_a_users_runs_only(client, user, other_user, tiny_corpus, char_tok):
    mine = make_run(user, tiny_corpus, char_tok)
    client.force_login(other_user)
    html = client.get("/training/").content.decode()
    assert f'data-run="{mine.pk}"' not in html and "No runs yet" in html
    client.force_login(user)
    html = client.get("/training/").content.decode()
    assert f'data-run="{mine.pk}" data-status="queued"' in html
    assert 'hx-trigger="every 3s"' in html  # an active run: the list refreshes itself


def test_visitors_are_asked_to_sign_in(client):
    html = client.get("/training/").content.decode()
    assert "<h1>Training</h1>" in html and "Sign in to train" in html
    assert client.get("/training/runs/1/").status_code == 404


def test_the_dashboard_carries_the_history_the_socket_continues_from(client, user, run):
    token = claim(run)
    record(run, token, range(1, 11), evals=[(0, 4.2, 4.3, 0.0), (10, 3.0, 3.1, 1.0)])
    client.force_login(user)
    response = client.get(f"/training/runs/{run.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    history = json.loads(html.split('<script id="run-history" type="application/json">')[1].split("</script>")[0])
    assert [r[0] for r in history["steps"]] == list(range(1, 11)) and history["epoch"] == 0
    assert history["samples"][0] == {"step": 0, "text": "sample at 0 <b>&</b>"}  # JSON, escaped by json_script
    chart = json.loads(html.split('<script id="run-chart" type="application/json">')[1].split("</script>")[0])
    assert chart["tokens_per_step"] == 64 and chart["lines"][0]["label"].startswith("ln(vocab_size")
    assert 'data-ws="/ws/training/runs/' in html and "Reading the loss" in html
    assert "<b>&</b>" not in html


def test_another_users_run_is_not_found_and_cannot_be_cancelled(client, other_user, run):
    client.force_login(other_user)
    assert client.get(f"/training/runs/{run.pk}/").status_code == 404
    assert client.post(f"/training/runs/{run.pk}/cancel/").status_code == 404
    assert client.get(f"/training/runs/{run.pk}/metrics.json").status_code == 404
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED


def test_staff_see_and_may_cancel_everyones_runs(client, staff, run):
    client.force_login(staff)
    assert client.get(f"/training/runs/{run.pk}/").status_code == 200
    assert client.post(f"/training/runs/{run.pk}/cancel/").status_code == 302
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED


def test_cancel_and_resume_buttons_do_what_they_say(client, user, run, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks.run_train, "delay", lambda run_id: type("R", (), {"id": "t"}))
    client.force_login(user)
    html = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert f'action="/training/runs/{run.pk}/cancel/"' in html
    assert client.post(f"/training/runs/{run.pk}/cancel/").status_code == 302
    html = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert 'status-cancelled">cancelled' in html and f'action="/training/runs/{run.pk}/resume/"' in html
    client.post(f"/training/runs/{run.pk}/resume/")
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    response = client.post(f"/training/runs/{run.pk}/resume/", follow=True)  # twice: a message, no change
    assert "only a failed or cancelled run can be resumed" in response.content.decode()


def test_the_fork_form_refuses_too_few_steps_on_the_field(client, user, run):
    checkpoint = Checkpoint.objects.create(run=run, step=20, path="runs/x/ckpt-000020.safetensors")
    client.force_login(user)
    response = client.get(f"/training/checkpoints/{checkpoint.pk}/fork/")
    assert response.status_code == 200 and 'name="max_steps" value="40"' in response.content.decode()
    response = client.post(f"/training/checkpoints/{checkpoint.pk}/fork/",
                           {"max_steps": 10, "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_steps": 0})
    assert response.status_code == 400 and "must be more than the checkpoint" in response.content.decode()
    assert Run.objects.count() == 1


def test_compare_lists_the_settings_that_differ(client, user, other_user, tiny_corpus, char_tok):
    a = make_run(user, tiny_corpus, char_tok, learning_rate=1e-2)
    b = make_run(user, tiny_corpus, char_tok, learning_rate=3e-3)
    hidden = make_run(other_user, tiny_corpus, char_tok)
    client.force_login(user)
    response = client.get(f"/training/compare/?run={a.pk}&run={b.pk}&run={hidden.pk}&run=nonsense")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-key="learning_rate"' in html and 'data-key="n_layer"' not in html
    assert f"Run #{hidden.pk} is not one you can see" in html
    data = json.loads(html.split('<script id="compare-data" type="application/json">')[1].split("</script>")[0])
    assert [d["chart"]["run"] for d in data] == [a.pk, b.pk]


def test_metrics_json_has_every_step_with_field_names(client, user, run):
    token = claim(run)
    record(run, token, range(1, 6), evals=[(5, 3.5, 3.6, 0.5)])
    client.force_login(user)
    data = client.get(f"/training/runs/{run.pk}/metrics.json").json()
    assert data["step_fields"][:2] == ["step", "loss"] and len(data["steps"]) == 5 and data["evals"][0][0] == 5


def test_the_panel_fragment_comes_back_out_of_band(client, user, run):
    client.force_login(user)
    html = client.get(f"/training/runs/{run.pk}/panel/").content.decode()
    for part in ("run-head", "run-checkpoints", "run-timeline"):
        assert f'id="{part}"' in html
    assert html.count('hx-swap-oob="true"') == 3
    assert "Queued:" in html and "#1</strong> in line" in html


def test_a_failed_run_shows_its_reason(client, user, run):
    token = claim(run)
    lease.run_finish(run_id=run.pk, token=token, status=Run.Status.FAILED, reason="the loss became NaN at step 7")
    client.force_login(user)
    html = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert 'role="alert"><strong>Failed:</strong> the loss became NaN at step 7' in html


def test_staff_manage_runs_in_the_admin(client, run, monkeypatch):
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("root", password="x-very-secret-1")
    client.force_login(admin)
    assert client.get("/admin/training/run/").status_code == 200
    assert client.get(f"/admin/training/run/{run.pk}/change/").status_code == 200
    response = client.post("/admin/training/run/", {"action": "cancel_runs", "_selected_action": [run.pk]})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
