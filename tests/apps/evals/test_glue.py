"""workers/evals.py in this process (no Celery): what each method records, the answers file, cancel and failure."""

import json

import pytest

from apps.evals import services
from apps.evals.models import Evaluation
from workers.evals import evaluation_run
from workers.model_cache import model_cache, model_spec

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def cold_cache():
    model_cache.clear()
    yield
    model_cache.clear()


def run(**kwargs) -> Evaluation:
    e = services.evaluation_create(**kwargs)
    evaluation_run(evaluation_id=e.pk)
    e.refresh_from_db()
    return e


def test_generate_scores_each_problem_and_writes_the_answers(user, tiny, tasks_corpus):
    e = run(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out", n=5, max_new_tokens=6)
    assert e.status == "succeeded", e.error
    r = e.results
    assert r["metric"] == "pass@1" and r["n"] == 5 and 0 <= r["low"] <= r["score"] <= r["high"] <= 1
    answers = json.loads(e.answers_file.read_text())["answers"]
    assert [a["prompt"] for a in answers] == ["2+2=", "3+4=", "1+5=", "9-3=", "Say yes."]
    assert [a["expected"] for a in answers] == ["4", "7", "6", "6", "yes"]
    for a in answers:
        assert len(a["answers"]) == 1 and a["answers"][0]["n_tokens"] <= 6
        assert a["correct"] == a["answers"][0]["correct"] and a["reward"] == float(a["correct"])
    assert r["score"] == sum(a["correct"] for a in answers) / 5  # the score is what the checker said
    assert "chat template" in " ".join(e.notes)  # the tiny model has ChatML: prompts went through it


def test_greedy_answers_are_the_same_twice(user, tiny, tasks_corpus):
    first = run(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out", n=3,
                max_new_tokens=5)
    second = run(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out", n=3,
                 max_new_tokens=5)
    texts = [[a["answer"] for a in json.loads(e.answers_file.read_text())["answers"]] for e in (first, second)]
    assert texts[0] == texts[1]


def test_pass_at_k_draws_k_samples_per_problem(user, tiny, tasks_corpus):
    e = run(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out", n=3, k=3,
            max_new_tokens=4)
    assert e.status == "succeeded", e.error
    answers = json.loads(e.answers_file.read_text())["answers"]
    assert all(len(a["answers"]) == 3 and a["n_correct"] == sum(s["correct"] for s in a["answers"]) for a in answers)
    assert set(e.results["metrics"]) == {"pass@1", "pass@3", "ended"}
    assert e.results["metrics"]["pass@3"]["value"] == sum(a["n_correct"] > 0 for a in answers) / 3


def test_multiple_choice_scores_the_bundled_benchmark(user, tiny):
    e = run(user=user, model=tiny, method="choice", benchmark="shakespeare-words", split="val", n=4)
    assert e.status == "succeeded", e.error
    assert e.results["metric"] == "acc" and e.results["n"] == 4 and e.results["chance"] == 0.25
    answers = json.loads(e.answers_file.read_text())["answers"]
    for a in answers:
        picked = [c for c in a["choices"] if c["picked"]]
        assert len(picked) == 1 and picked[0]["loglikelihood"] == max(c["loglikelihood"] for c in a["choices"])
        assert a["correct"] == picked[0]["right"]


def test_loss_equals_scoring_the_tokens_at_once(user, tiny, tiny_corpus):
    from workers.gpt.evaluate import token_loss

    e = run(user=user, model=tiny, method="loss", corpus=tiny_corpus, split="val", n=100)
    assert e.status == "succeeded", e.error
    loaded, _ = model_cache.get(model_spec(tiny))
    text = tiny_corpus.file.read_text()[tiny_corpus.split["char"]:]
    ids = loaded.tokenizer.encode(text)[:101]
    whole = token_loss(loaded.model, ids)
    assert e.results["n"] == whole["n_tokens"] == 100
    assert e.results["score"] == pytest.approx(whole["loss"], rel=1e-5)
    assert e.results["metrics"]["perplexity"] == pytest.approx(whole["perplexity"], rel=1e-4)
    assert e.answers_path == ""


def test_a_cancelled_evaluation_stops_and_keeps_nothing(user, tiny, tasks_corpus):
    e = services.evaluation_create(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out",
                                   n=5, max_new_tokens=4)
    original = services.evaluation_start

    def start_then_cancel(**kwargs):  # the user presses Cancel just after the worker took the job
        row = original(**kwargs)
        Evaluation.objects.filter(pk=e.pk).update(cancel_requested=True)
        return row

    services.evaluation_start = start_then_cancel
    try:
        assert evaluation_run(evaluation_id=e.pk) == "cancelled"
    finally:
        services.evaluation_start = original
    e.refresh_from_db()
    assert e.status == "cancelled" and e.results == {} and e.answers_path == ""


def test_a_failure_is_recorded_in_words(user, tiny, tasks_corpus):
    e = services.evaluation_create(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out",
                                   n=2, max_new_tokens=4)
    tiny.file.unlink()  # the weights went missing after the job was queued
    assert evaluation_run(evaluation_id=e.pk) == "failed"
    e.refresh_from_db()
    assert e.status == "failed" and e.error and e.finished is not None


def test_a_second_delivery_does_nothing(user, tiny, tasks_corpus):
    e = run(user=user, model=tiny, method="generate", corpus=tasks_corpus, split="held_out", n=1, max_new_tokens=2)
    assert evaluation_run(evaluation_id=e.pk) == "skipped"
