"""evaluation_create: what it queues, and every refusal (a 4xx with a message that says what to do, and no row)."""

import pytest
from django.contrib.auth.models import AnonymousUser

from apps.evals import services
from apps.evals.models import Evaluation
from apps.evals.selectors import EvalError

pytestmark = pytest.mark.django_db


def create(**changes):
    kwargs = {"method": "generate", "split": "held_out", "n": 3, "max_new_tokens": 8} | changes
    return services.evaluation_create(**kwargs)


def refused(status, match, **kwargs):
    with pytest.raises(EvalError, match=match) as info:
        create(**kwargs)
    assert info.value.status == status
    assert Evaluation.objects.count() == 0
    return info.value


def test_it_queues_a_generate_evaluation_on_a_tasks_corpus(django_capture_on_commit_callbacks, user, tiny,
                                                          tasks_corpus, queued):
    with django_capture_on_commit_callbacks(execute=True):
        e = create(user=user, model=tiny, corpus=tasks_corpus)
    assert queued == [e.pk]
    e.refresh_from_db()
    assert (e.status, e.method, e.dataset, e.split, e.n, e.k, e.temperature) == (
        "queued", "generate", "Small sums", "held_out", 3, 1, 0.0)
    assert e.task_key == f"generate:corpus:{tasks_corpus.pk}:held_out" and e.task_id == "test-task-id"


def test_it_takes_a_model_by_slug_and_a_benchmark_by_key(user, tiny, queued):
    e = services.evaluation_create(user=user, model=tiny.slug, method="choice", benchmark="shakespeare-words",
                                   split="val", n=10)
    assert e.model == tiny and e.task_key == "choice:benchmark:shakespeare-words:val"


def test_pass_at_k_samples_at_a_temperature_above_zero(user, tiny, tasks_corpus, queued):
    e = create(user=user, model=tiny, corpus=tasks_corpus, k=4)
    assert e.k == 4 and e.temperature == services.DEFAULT_SAMPLING_TEMPERATURE and e.task_key.endswith(":k4")


def test_it_refuses_anonymous_users(tiny, tasks_corpus):
    refused(403, "Sign in", user=AnonymousUser(), model=tiny, corpus=tasks_corpus)


def test_it_refuses_an_unknown_model(user, tasks_corpus):
    refused(404, "no model 'nope'", user=user, model="nope", corpus=tasks_corpus)


def test_it_rejects_another_users_private_model(user, private, tasks_corpus):
    refused(404, "no model", user=user, model=private, corpus=tasks_corpus)


def test_the_owner_may_evaluate_their_private_model(other_user, private, queued):
    e = create(user=other_user, model=private, corpus=None, benchmark="shakespeare-words", method="choice",
               split="val")
    assert e.owner == other_user


def test_it_refuses_a_text_corpus_for_a_generate_evaluation(user, tiny, tiny_corpus):
    err = refused(400, "is a text data set, but a generate-then-check evaluation needs a task set", user=user,
                  model=tiny, corpus=tiny_corpus)
    assert err.field == "dataset"


def test_it_refuses_a_benchmark_of_another_method(user, tiny):
    refused(400, "scored by choice, not generate", user=user, model=tiny, benchmark="shakespeare-words", split="val")


def test_it_refuses_a_tasks_corpus_for_a_loss_evaluation(user, tiny, tasks_corpus):
    refused(400, "a loss evaluation reads a text corpus", user=user, model=tiny, corpus=tasks_corpus, method="loss",
            split="val", n=100)


def test_it_refuses_another_users_corpus(other_user, tiny, tasks_corpus):
    refused(404, "no data set", user=other_user, model=tiny, corpus=tasks_corpus)


@pytest.mark.parametrize("n", [0, -3, 1001, "many"])
def test_it_refuses_n_out_of_range(user, tiny, tasks_corpus, n, settings):
    settings.EVALS_MAX_PROBLEMS = 1000
    refused(400, "n", user=user, model=tiny, corpus=tasks_corpus, n=n)


def test_it_refuses_more_problems_than_the_split_holds(user, tiny, tasks_corpus):
    refused(400, "has 5 problems in its held_out split: ask for at most 5", user=user, model=tiny,
            corpus=tasks_corpus, n=6)


def test_it_refuses_an_unknown_split(user, tiny, tasks_corpus):
    refused(400, "Split 'test' does not exist here: choose held_out or train", user=user, model=tiny,
            corpus=tasks_corpus, split="test")


def test_it_refuses_k_above_the_limit_and_k_for_other_methods(user, tiny, tasks_corpus, settings):
    settings.EVALS_MAX_K = 8
    refused(400, "between 1 and 8", user=user, model=tiny, corpus=tasks_corpus, k=9)
    refused(400, "only to generate-then-check", user=user, model=tiny, benchmark="shakespeare-words",
            method="choice", split="val", k=2)


def test_it_refuses_prompts_longer_than_the_models_context(user, short):
    # the bundled arithmetic prompts carry the think/answer instruction: far more than 64 tokens in ChatML
    err = refused(400, "do not fit.*context of 64 tokens. Refused rather than cropped", user=user, model=short,
                  benchmark="arithmetic-2", n=5)
    assert err.field == "max_new_tokens"


def test_it_refuses_a_model_whose_tokenizer_cannot_read_the_problems(user, tasks_corpus, encoded_char_model):
    refused(400, "cannot read problem", user=user, model=encoded_char_model, corpus=tasks_corpus)


def test_cancel_is_for_the_owner_or_staff(user, other_user, staff, tiny, tasks_corpus, queued):
    e = create(user=user, model=tiny, corpus=tasks_corpus)
    with pytest.raises(EvalError) as info:
        services.evaluation_cancel(evaluation=e, user=other_user)
    assert info.value.status == 403
    e = services.evaluation_cancel(evaluation=e, user=staff)
    assert e.status == "cancelled"
