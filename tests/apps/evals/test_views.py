"""The pages: the Evaluations section of a model's page, the form (htmx and plain), the answers browser, the
lineage table on a model's and a run's page, and the socket's authorization."""


import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.urls import reverse

from apps.evals.models import Evaluation
from apps.registry.models import Model
from config.asgi import application
from tests.apps.evals.factories import finished
from tests.conftest import run_async

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_the_model_page_shows_results_with_their_interval(client, tiny):
    finished(tiny, score=0.42, low=0.33, high=0.52)
    page = client.get(reverse("registry:detail", args=[tiny.slug])).content.decode()
    assert 'id="evaluations"' in page and "42.0 %" in page and "[33.0 – 52.0]" in page
    assert f'ws-connect="/ws/evals/model/{tiny.pk}/"' in page
    assert "Sign in to run an evaluation" in page and 'name="method"' not in page  # anonymous: results, no form


def test_a_signed_in_user_gets_the_form_with_the_bundled_benchmarks(client, user, tiny, tasks_corpus):
    client.force_login(user)
    page = client.get(reverse("registry:detail", args=[tiny.slug])).content.decode()
    assert 'name="method"' in page and "benchmark:shakespeare-words" in page and f"corpus:{tasks_corpus.pk}" in page


def test_posting_the_form_queues_and_re_renders_the_section(client, user, tiny, tasks_corpus, queued):
    client.force_login(user)
    r = client.post(reverse("evals:new", args=[tiny.slug]), {
        "method": "generate", "dataset": f"corpus:{tasks_corpus.pk}", "split": "held_out", "n": "3", "k": "1",
        "max_new_tokens": "8"}, **HTMX)
    assert r.status_code == 200
    e = Evaluation.objects.get()
    assert f'id="evaluation-{e.pk}"' in r.content.decode() and "queued" in r.content.decode()


def test_a_bad_request_answers_4xx_with_the_reason_and_creates_nothing(client, user, tiny, tiny_corpus):
    client.force_login(user)
    r = client.post(reverse("evals:new", args=[tiny.slug]), {
        "method": "generate", "dataset": f"corpus:{tiny_corpus.pk}", "split": "held_out", "n": "3"}, **HTMX)
    assert r.status_code == 400
    assert "needs a task set" in r.content.decode()
    assert not Evaluation.objects.exists()


def test_anonymous_posts_are_refused_with_403(client, tiny):
    r = client.post(reverse("evals:new", args=[tiny.slug]), {
        "method": "choice", "dataset": "benchmark:shakespeare-words", "split": "val", "n": "3"}, **HTMX)
    assert r.status_code == 403 and "Sign in" in r.content.decode()
    assert not Evaluation.objects.exists()


def test_another_users_private_model_looks_absent(client, user, private):
    client.force_login(user)
    assert client.get(reverse("evals:model", args=[private.slug])).status_code == 404
    r = client.post(reverse("evals:new", args=[private.slug]), {"method": "choice"}, **HTMX)
    assert r.status_code == 404
    e = finished(private, score=0.5, low=0.4, high=0.6)
    assert client.get(reverse("evals:detail", args=[e.pk])).status_code == 404


def test_the_answers_browser_colours_right_and_wrong_and_filters(client, tiny):
    answers = [
        {"i": 0, "prompt": "2+2=", "expected": "4", "answer": "4", "correct": True, "n_correct": 1, "k": 1,
         "reward": 1.0, "answers": [{"text": "4", "correct": True, "reward": 1.0, "reason": "4 equals 4",
                                     "ended": True, "n_tokens": 1}]},
        {"i": 1, "prompt": "3+4=", "expected": "7", "answer": "8", "correct": False, "n_correct": 0, "k": 1,
         "reward": 0.0, "answers": [{"text": "8", "correct": False, "reward": 0.0, "reason": "8 is not 7",
                                     "ended": False, "n_tokens": 3}]},
    ]
    e = finished(tiny, score=0.5, low=0.1, high=0.9, answers=answers, n=2)
    page = client.get(reverse("evals:detail", args=[e.pk])).content.decode()
    assert page.count('class="answer right"') == 1 and page.count('class="answer wrong"') == 1
    assert "8 is not 7" in page and "did not stop" in page
    wrong = client.get(reverse("evals:answers", args=[e.pk]) + "?show=wrong", **HTMX).content.decode()
    assert 'class="answer wrong"' in wrong and 'class="answer right"' not in wrong


def lineage(owner):
    """Tiny (the `tiny` fixture) and two rows derived from it, sharing its weights: rows are enough for a table."""
    base = Model.objects.get(name="Tiny")
    sft = Model.objects.create(**_copy(base, "Tiny-sft"), base=base)
    grpo = Model.objects.create(**_copy(base, "Tiny-grpo"), base=sft)
    return base, sft, grpo


def _copy(model, name):
    fields = {f.name: getattr(model, f.name) for f in Model._meta.concrete_fields
              if f.name not in ("id", "name", "slug", "created", "updated", "base")}
    return fields | {"name": name, "slug": name.lower()}


def test_the_lineage_table_shows_each_step_side_by_side_with_deltas(client, tiny):
    base, sft, grpo = lineage(None)
    finished(base, score=0.10, low=0.06, high=0.16)
    finished(sft, score=0.30, low=0.24, high=0.37)
    finished(grpo, score=0.32, low=0.26, high=0.39)
    finished(sft, score=2.5, low=None, high=None, method="loss", task_key="loss:corpus:1:val", dataset="Shakespeare")
    finished(grpo, score=2.7, low=None, high=None, method="loss", task_key="loss:corpus:1:val", dataset="Shakespeare")
    page = client.get(reverse("registry:detail", args=[grpo.slug])).content.decode()
    table = page[page.index("What each step changed"):]
    assert table.index("Tiny</a>") < table.index("Tiny-sft</a>") < table.index("Tiny-grpo</a>")  # base first
    assert '<span class="delta better">+20.0 pts</span>' in table  # intervals apart: a real change
    assert '<span class="delta better overlap">+2.0 pts</span>' in table  # intervals overlap: faded
    assert '<span class="delta worse">+0.200</span>' in table  # loss went up: worse
    assert "Run the missing evaluations of this lineage" not in page  # anonymous


def test_the_run_page_includes_the_lineage_table_of_the_model_it_produced(client, user, tiny, tiny_corpus):
    from apps.training.models import Run
    from tests.training_fixtures import make_run
    from apps.tokenization import services as tokenization_services

    tok = tokenization_services.tokenizer_char_create(corpus=tiny_corpus, name="tiny-char")
    run = make_run(user, tiny_corpus, tok)
    base, sft, _ = lineage(user)
    Model.objects.filter(pk=sft.pk).update(run=run)
    Run.objects.filter(pk=run.pk).update(base_model=base)
    finished(base, score=0.10, low=0.06, high=0.16)
    finished(sft, score=0.30, low=0.24, high=0.37)
    client.force_login(user)
    page = client.get(reverse("training:run", args=[run.pk])).content.decode()
    assert 'id="run-evaluations"' in page and "What each step changed" in page and "+20.0 pts" in page
    assert "Run the missing evaluations" in page


def test_lineage_fill_queues_the_missing_evaluations(client, user, tiny, queued):
    base, sft, grpo = lineage(user)
    Model.objects.update(status=Model.Status.PUBLISHED)
    first = finished(base, score=0.10, low=0.06, high=0.16, task_key="choice:benchmark:shakespeare-words:val",
                     method="choice")
    Evaluation.objects.filter(pk=first.pk).update(benchmark="shakespeare-words", split="val", n=5)
    client.force_login(user)
    r = client.post(reverse("evals:fill", args=[grpo.slug]), {"next": "/models/"})
    assert r.status_code == 302 and r["Location"] == "/models/"
    made = Evaluation.objects.filter(status="queued")
    assert sorted(e.model.name for e in made) == ["Tiny-grpo", "Tiny-sft"] and all(e.n == 5 for e in made)


def _connect(path, user):
    async def go():
        comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])
        comm.scope["user"] = user
        connected, code = await comm.connect()
        first = await comm.receive_from(timeout=5) if connected else None
        await comm.disconnect()
        return connected, code, first

    return run_async(go())


@pytest.mark.django_db(transaction=True)
def test_the_socket_refuses_a_private_model_and_sends_running_jobs_of_a_published_one(tmp_path, user):
    from tests.apps.registry.factories import make_model

    public = make_model(tmp_path, name="Pub", ctx=128)
    draft = make_model(tmp_path, name="Draft", ctx=128, status=Model.Status.DRAFT, owner=None)
    Evaluation.objects.create(model=public, method="choice", benchmark="shakespeare-words", dataset="Shakespeare words",
                              task_key="choice:benchmark:shakespeare-words:val", split="val", n=10,
                              status=Evaluation.Status.RUNNING, done=4, progress=0.4)
    connected, code, _ = _connect(f"/ws/evals/model/{draft.pk}/", AnonymousUser())
    assert not connected
    connected, _, first = _connect(f"/ws/evals/model/{public.pk}/", AnonymousUser())
    assert connected and 'hx-swap-oob="true"' in first and "4/10" in first
