"""The GRPO glue (workers/reinforce.py), run in this process on a tiny character model: a run row in; per-step
metrics with the GRPO extras, the sampled groups, held-out pass@1 before and after, checkpoints, and the result
registered as <base>-grpo out — and the guards: flat rewards stop the run with the library's words, a NaN reward
fails it, answers cut at the context are counted; cancel and resume continue from the last checkpoint."""

import pytest
import torch

from apps.registry.models import Model
from apps.training import grpo as grpo_app
from apps.training.models import Checkpoint, Metric, Rollout, Run
from tests.data_fixtures import *  # noqa: F401,F403
from tests.grpo_fixtures import *  # noqa: F401,F403
from tests.grpo_fixtures import tiny_registry_model
from workers import reinforce
from workers import training as glue
from workers.gpt.tasks import CheckResult

pytestmark = pytest.mark.django_db(transaction=True)

FAST = dict(steps=4, prompts_per_step=2, group_size=3, max_new_tokens=4, learning_rate=1e-3, flat_steps=0)


@pytest.fixture(autouse=True)
def _one_thread(no_enqueue_runs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_enqueue_runs(monkeypatch):
    from workers import tasks

    class Result:
        id = "test-task-id"

    monkeypatch.setattr(tasks.run_train, "delay", lambda *args: Result())
    monkeypatch.setattr(tasks.evaluation_run, "delay", lambda *args: Result())  # run in the test, below


def make(user, model, corpus, **changes):
    return grpo_app.grpo_run_create(owner=user, base_model=model, corpus=corpus, grpo_config=FAST | changes,
                                    lora=False, enqueue=False)


def train(run, **kwargs) -> str:
    return glue.train_run(run.pk, worker="train@test", **kwargs)


def test_a_grpo_run_records_its_steps_groups_heldout_and_registers_the_result(user, tiny_model, arithmetic_set):
    run = make(user, tiny_model, arithmetic_set, flat_steps=0)
    assert train(run) == "succeeded"
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and run.step == 4
    metrics = list(Metric.objects.filter(run=run).order_by("step"))
    assert [m.step for m in metrics] == [1, 2, 3, 4]
    for key in ("reward", "accuracy", "reward_std", "response_len", "entropy", "truncated"):
        assert metrics[-1].extra[key] is not None, key
    groups = Rollout.objects.get(run=run, step=4).groups
    assert len(groups) == 2 and len(groups[0]["samples"]) == 3 and "reward" in groups[0]["samples"][0]
    made = Model.objects.get(run=run)
    assert made.name == "tiny-chat-grpo" and made.base == tiny_model and made.owner == user
    assert made.stop_ids == tiny_model.stop_ids and made.lineage["corpus"] == "Sums"
    assert made.file.exists() and "registered as tiny-chat-grpo" in run.reason


def test_heldout_before_and_after_are_evaluation_jobs_drawn_on_the_run_page_and_the_models_table(
        client, user, tiny_model, arithmetic_set):
    from django.urls import reverse

    from apps.evals.models import Evaluation
    from apps.evals.selectors import lineage_table
    from workers.evals import evaluation_run

    run = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set, grpo_config=FAST,
                                   lora=False, pass_k=2, enqueue=False)
    before = Evaluation.objects.get(pk=run.data["heldout"]["before"])
    assert (before.model, before.corpus, before.split, before.n, before.k) == (tiny_model, arithmetic_set,
                                                                                "held_out", 8, 2)
    assert before.max_new_tokens == FAST["max_new_tokens"] and before.temperature == 1.0
    assert train(run) == "succeeded"
    run.refresh_from_db()
    made = Model.objects.get(run=run)
    after = Evaluation.objects.get(pk=run.data["heldout"]["after"])
    assert after.model == made and after.task_key == before.task_key and after.seed == before.seed
    client.force_login(user)
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    assert 'id="grpo-heldout" hx-get' in page and "queued for an infer worker" in page  # polls until scored
    for e in (before, after):
        assert evaluation_run(evaluation_id=e.pk) == "succeeded"
    views = grpo_app.heldout_views(run=run)
    assert not views["active"]
    for which in ("before", "after"):
        v = views[which]
        assert v["n"] == 8 and 0 <= v["pass1_low"] <= v["pass1"] <= v["pass1_high"] <= 1
        assert v["pass1"] <= v["passk"] <= 1
    panel = client.get(reverse("training:heldout", args=[run.pk])).content.decode()
    assert "hx-get" not in panel and "(k=2)" in panel
    for which in ("before", "after"):  # drawn: a bar to pass@1 and its interval, on a 0-100 % axis
        v = views[which]
        row = panel.split(f'class="hb-row" data-which="{which}"')[1].split("hb-value")[0]
        assert f'class="hb-bar" style="width: {100 * v["pass1"]:.1f}%"' in row
        assert f'left: {100 * v["pass1_low"]:.1f}%; width: {100 * (v["pass1_high"] - v["pass1_low"]):.1f}%' in row
    table = lineage_table(model=made, user=user)
    assert table["models"] == [tiny_model, made] and len(table["rows"]) == 1
    assert [c["evaluation_id"] for c in table["rows"][0]["cells"]] == [before.pk, after.pk]
    for url in (reverse("training:run", args=[run.pk]), reverse("registry:detail", args=[made.slug])):
        html = client.get(url).content.decode()
        assert "Sums (held_out, k=2)" in html, url  # the "what each step changed" row, base vs GRPO
    # a second run of the same base model on the same settings reuses the "before" measurement
    again = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set, grpo_config=FAST,
                                     lora=False, pass_k=2, enqueue=False)
    assert again.data["heldout"]["before"] == before.pk


def test_lora_is_merged_into_the_registered_weights(user, tiny_model, arithmetic_set):
    pytest.importorskip("peft")
    run = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set,
                                   grpo_config=FAST | {"steps": 2, "beta": 0.04}, lora=True, lora_r=2, enqueue=False)
    assert train(run) == "succeeded"
    from workers.gpt.checkpoint import load_checkpoint

    keys = load_checkpoint(Model.objects.get(run=run).file, with_optimizer=False).model_state.keys()
    assert not [k for k in keys if "lora" in k]
    assert Metric.objects.filter(run=run).last().extra["kl"] is not None


def test_a_task_the_model_never_solves_is_stopped_with_the_librarys_message(client, user, tiny_model,
                                                                          arithmetic_set):
    run = make(user, tiny_model, arithmetic_set, steps=50, flat_steps=2)
    assert train(run) == "stopped: flat rewards"
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED and run.step == 2
    assert "every answer scored 0" in run.reason and "nothing was being learned" in run.reason
    client.force_login(user)
    page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert 'role="alert"' in page and "nothing was being learned" in page  # the dashboard says why it stopped
    assert run.data["heldout"].get("after") is None  # no model registered, so no "after" evaluation


def test_a_nan_reward_fails_the_run_with_its_message(user, tiny_model, arithmetic_set, monkeypatch):
    monkeypatch.setattr(reinforce, "check", lambda *a, **k: CheckResult(float("nan"), False, None, False, "?"))
    run = make(user, tiny_model, arithmetic_set)
    run.train_config = run.train_config | {"n_eval": 0}
    run.save()
    assert train(run) == "failed"
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED and "is nan: a reward must be a finite number" in run.reason


def test_answers_longer_than_the_context_are_cut_and_counted(user, arithmetic_set):
    from apps.corpora.tasksets import taskset_problems

    lengths = [len(p.prompt) for p in taskset_problems(corpus=arithmetic_set, split="train")]
    longest = max(lengths) + 1
    model = tiny_registry_model(owner=user, name="short", block_size=longest + 2)
    run = make(user, model, arithmetic_set, max_new_tokens=1, steps=1)
    run.train_config = run.train_config | {"n_eval": 0, "grpo": run.train_config["grpo"] | {"max_new_tokens": 64}}
    run.save()
    assert train(run) == "succeeded"
    extra = Metric.objects.get(run=run, step=1).extra
    # the longest prompt leaves room for 2 tokens, a shorter one for 2 more per character it is shorter
    assert extra["truncated"] > 0 and extra["response_len"] <= 2 + (max(lengths) - min(lengths))


def test_a_cancelled_run_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_does(user, tiny_model,
                                                                                            arithmetic_set):
    whole = make(user, tiny_model, arithmetic_set, steps=4)
    assert train(whole) == "succeeded"
    resumed = make(user, tiny_model, arithmetic_set, steps=4)
    stop = __import__("threading").Event()
    real = reinforce.ReinforceJob.on_grpo_step

    def stop_after_2(self, r):
        real(self, r)
        if r["step"] == 2:
            stop.set()

    reinforce.ReinforceJob.on_grpo_step = stop_after_2
    try:
        assert train(resumed, stop=stop) == "cancelled"
    finally:
        reinforce.ReinforceJob.on_grpo_step = real
    resumed.refresh_from_db()
    assert resumed.step == 2 and Checkpoint.objects.filter(run=resumed, step=2).exists()
    Run.objects.filter(pk=resumed.pk).update(status=Run.Status.QUEUED)
    assert train(resumed) == "succeeded"
    a = list(Metric.objects.filter(run=whole).order_by("step").values_list("extra", flat=True))
    b = list(Metric.objects.filter(run=resumed).order_by("step").values_list("extra", flat=True))
    assert [x["reward"] for x in a] == [x["reward"] for x in b]
    assert [x["response_len"] for x in a] == [x["response_len"] for x in b]


# -- the first step waits for the "before" evaluation when it shares this machine's cores --------------------------


def _before_running_on(run, host: str):
    from apps.evals.models import Evaluation

    Evaluation.objects.filter(pk=run.data["heldout"]["before"]).update(status=Evaluation.Status.RUNNING,
                                                                         worker=f"pid 1@{host}")
    return Evaluation.objects.get(pk=run.data["heldout"]["before"])


def _messages(run) -> list[str]:
    return list(run.events.order_by("at", "id").values_list("message", flat=True))


@pytest.fixture
def quick_poll(monkeypatch):
    monkeypatch.setattr(reinforce, "BEFORE_POLL_SECONDS", 0.05)


def test_the_first_step_waits_while_the_before_evaluation_runs_on_this_machine(user, tiny_model, arithmetic_set,
                                                                               quick_poll):
    import platform
    import threading

    from django.db import connection
    from django.utils import timezone

    from apps.evals.models import Evaluation

    run = make(user, tiny_model, arithmetic_set, steps=2)
    before = _before_running_on(run, platform.node())
    finished = {}

    def finish_later():
        import time

        time.sleep(1.0)
        finished["at"] = timezone.now()
        Evaluation.objects.filter(pk=before.pk).update(status=Evaluation.Status.SUCCEEDED)
        connection.close()

    threading.Thread(target=finish_later).start()
    assert train(run) == "succeeded"
    messages = _messages(run)
    assert any(f"Waiting for evaluation #{before.pk}" in m for m in messages), messages
    starts = run.events.get(message__startswith="Training starts (waited")
    assert starts.at >= finished["at"]  # no step was taken while the evaluation ran
    assert Metric.objects.filter(run=run).count() == 2


def test_an_evaluation_elsewhere_or_queued_with_no_infer_worker_here_is_not_waited_for(user, tiny_model,
                                                                                       arithmetic_set, quick_poll):
    queued = make(user, tiny_model, arithmetic_set, steps=1)  # no infer worker heartbeats in this test
    elsewhere = make(user, tiny_model, arithmetic_set, steps=1)
    _before_running_on(elsewhere, "another-machine")
    for run in (queued, elsewhere):
        assert train(run) == "succeeded"
        assert not any("Waiting for evaluation" in m for m in _messages(run))


def test_the_wait_is_capped_and_cancel_is_heard_while_waiting(user, tiny_model, arithmetic_set, quick_poll,
                                                              monkeypatch):
    import platform
    import threading

    capped = make(user, tiny_model, arithmetic_set, steps=1)
    _before_running_on(capped, platform.node())
    monkeypatch.setattr(reinforce, "BEFORE_WAIT_SECONDS", 0.5)
    assert train(capped) == "succeeded"  # went on while the evaluation still ran
    assert any(m.startswith("Training starts (waited") for m in _messages(capped))

    monkeypatch.setattr(reinforce, "BEFORE_WAIT_SECONDS", 600)
    cancelled = make(user, tiny_model, arithmetic_set, steps=1)
    _before_running_on(cancelled, platform.node())
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert train(cancelled, stop=stop) == "cancelled"
    cancelled.refresh_from_db()
    assert cancelled.step == 0 and not Metric.objects.filter(run=cancelled).exists()
