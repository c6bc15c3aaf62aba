"""Task sets (the Data page's tasks kind): generated or uploaded, stored as JSONL with their split, shown with their
answers; a bad upload names its line and saves nothing."""

import json

import pytest

from apps.corpora import tasksets
from apps.corpora.models import Corpus
from apps.corpora.text import CorpusInputError
from tests.data_fixtures import *  # noqa: F401,F403

pytestmark = pytest.mark.django_db


def test_a_generated_task_set_stores_both_splits_with_the_shared_stats(user):
    c = tasksets.taskset_generate(owner=user, name="Sums", task="arithmetic", difficulty=2, seed=7, n_train=30,
                                  n_heldout=10)
    assert c.kind == Corpus.Kind.TASKS
    assert c.stats["task"] == {"generator": "arithmetic", "difficulty": 2, "seed": 7, "n_train": 30, "n_heldout": 10,
                               "instruction": "think"}
    train = tasksets.taskset_problems(corpus=c, split="train")
    held = tasksets.taskset_problems(corpus=c, split="held_out")
    assert len(train) == 30 and len(held) == 10
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    lines = [json.loads(line) for line in c.file.read_text().splitlines()]
    assert {line["split"] for line in lines} == {"train", "held_out"} and all("answer" in line for line in lines)


def test_the_short_instruction_changes_the_prompts_not_the_problems(user):
    think = tasksets.taskset_generate(owner=user, name="T", task="arithmetic", difficulty=1, seed=0, n_train=20,
                                      n_heldout=5)
    short = tasksets.taskset_generate(owner=user, name="S", task="arithmetic", difficulty=1, seed=0, n_train=20,
                                      n_heldout=5, instruction="short")
    assert short.stats["task"]["instruction"] == "short"
    for split in ("train", "held_out"):
        a, b = (tasksets.taskset_problems(corpus=c, split=split) for c in (think, short))
        assert [p.answer for p in a] == [p.answer for p in b]
        assert all("<answer>" in p.prompt for p in a)
        assert all(p.prompt.endswith("Answer in one short sentence.") and "<answer>" not in p.prompt for p in b)


def test_the_form_offers_the_short_instruction_and_refuses_an_unknown_one(client, user):
    from apps.corpora.taskset_forms import TaskSetGenerateForm

    data = {"name": "Sums", "task": "arithmetic", "difficulty": 1, "seed": 0, "n_train": 10, "n_heldout": 5}
    assert TaskSetGenerateForm(data | {"instruction": "short"}).is_valid()
    form = TaskSetGenerateForm(data | {"instruction": "chatty"})
    assert not form.is_valid() and "instruction" in form.errors


def test_the_same_seed_makes_the_same_problems(user):
    a = tasksets.taskset_generate(owner=user, name="A", task="letters", difficulty=1, seed=3, n_train=5, n_heldout=2)
    b = tasksets.taskset_generate(owner=user, name="B", task="letters", difficulty=1, seed=3, n_train=5, n_heldout=2)
    assert a.sha256 == b.sha256


def test_an_upload_is_split_and_checked(user):
    data = "\n".join(json.dumps({"prompt": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(50)).encode()
    c = tasksets.taskset_upload(owner=user, name="Mine", data=data)
    t = c.stats["task"]
    assert t["generator"] == "upload" and t["n_train"] + t["n_heldout"] == 50 and t["n_heldout"] > 0


def test_a_bad_upload_names_its_line_and_saves_nothing(user):
    data = b'{"prompt": "2+2?", "answer": "4"}\n{"prompt": "no answer"}\n'
    with pytest.raises(CorpusInputError, match="line 2") as e:
        tasksets.taskset_upload(owner=user, name="Bad", data=data)
    assert '"answer" is missing' in str(e.value)
    assert not Corpus.objects.filter(kind=Corpus.Kind.TASKS).exists()


def test_too_many_problems_are_refused(user):
    with pytest.raises(CorpusInputError, match="n_train"):
        tasksets.taskset_generate(owner=user, name="Huge", task="arithmetic", difficulty=1, seed=0, n_train=10**6,
                                  n_heldout=1)


def test_the_new_task_set_page_generates_and_shows_problems_with_answers(client, user):
    client.force_login(user)
    r = client.post("/data/tasks/new/", {"mode": "generate", "gen-name": "Counting", "gen-task": "letters",
                                            "gen-difficulty": "1", "gen-seed": "0", "gen-n_train": "20",
                                            "gen-n_heldout": "5"})
    c = Corpus.objects.get(name="Counting")
    assert r.status_code == 302 and r.url == f"/data/{c.id}/"
    page = client.get(r.url).content.decode()
    assert 'id="taskset-stats"' in page and 'id="taskset-sample"' in page
    first = tasksets.taskset_problems(corpus=c, split="train")[0]
    assert f"<code>{first.answer}</code>" in page


def test_the_upload_form_shows_the_bad_line(client, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    r = client.post("/data/tasks/new/", {"mode": "upload", "up-name": "Bad",
                                            "up-file": SimpleUploadedFile("p.jsonl", b"not json\n")})
    assert r.status_code == 400 and "line 1" in r.content.decode()
    assert not Corpus.objects.filter(name="Bad").exists()
