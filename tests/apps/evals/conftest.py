"""Fixtures for the evals tests: tiny registry models (a random Llama with a byte-level BPE and ChatML), a tasks
data set made through the ORM as the Data page will make it, and a record of what would be queued."""

import hashlib
import json

import pytest

from apps.corpora.models import Corpus
from apps.registry.models import Model
from apps.system import files
from tests.apps.registry.factories import make_model
from tests.data_fixtures import *  # noqa: F401,F403  (user, other_user, staff, tiny_corpus, ...)

# short prompts, so a 128-token tiny model has room to answer; the last two carry their split explicitly
PROBLEMS = [
    {"prompt": "2+2=", "answer": "4", "split": "held_out"},
    {"prompt": "3+4=", "answer": "7", "split": "held_out"},
    {"prompt": "1+5=", "answer": "6", "split": "held_out"},
    {"prompt": "9-3=", "answer": "6", "split": "held_out"},
    {"prompt": "Say yes.", "answer": "yes", "match": "exact", "split": "held_out"},
    {"prompt": "8-1=", "answer": "7", "split": "train"},
]


def make_tasks_corpus(owner, problems=PROBLEMS, name="Small sums") -> Corpus:
    data = "".join(json.dumps(p) + "\n" for p in problems).encode()
    sha = hashlib.sha256(data).hexdigest()
    relative = f"corpora/{sha}.jsonl"
    files.write_atomic(files.artifact_path(relative), data)
    n_held = sum(p.get("split") == "held_out" for p in problems)
    return Corpus.objects.create(
        name=name, kind=Corpus.Kind.TASKS, owner=owner, path=relative, sha256=sha, size_bytes=len(data),
        n_chars=len(data), n_lines=len(problems),
        stats={"task": {"generator": "upload", "difficulty": None, "seed": None, "n_train": len(problems) - n_held,
                        "n_heldout": n_held}})


@pytest.fixture
def tasks_corpus(user):
    return make_tasks_corpus(user)


@pytest.fixture
def tiny(tmp_path):
    """A published tiny chat model with a 128-token context."""
    return make_model(tmp_path, name="Tiny", ctx=128)


@pytest.fixture
def short(tmp_path):
    """A published tiny model whose 64-token context is shorter than the bundled arithmetic prompts."""
    return make_model(tmp_path, name="Short", ctx=64)


@pytest.fixture
def private(tmp_path, other_user):
    return make_model(tmp_path, name="Bobs", status=Model.Status.DRAFT, owner=other_user, ctx=128)


@pytest.fixture
def queued(monkeypatch):
    """The ids of evaluations handed to the infer queue (unit tests have no worker)."""
    from workers import tasks

    ids = []

    class Result:
        id = "test-task-id"

    monkeypatch.setattr(tasks.evaluation_run, "delay", lambda eid: ids.append(eid) or Result())
    return ids


@pytest.fixture
def encoded_char_model(tiny, tiny_corpus):
    """The tiny model relabelled with a character tokenizer of a few Shakespeare lines: it knows no digits."""
    from apps.tokenization import services as tokenization_services

    tok = tokenization_services.tokenizer_char_create(corpus=tiny_corpus, name="tiny-char")
    tiny.tokenizer_spec = {"kind": tok.kind, "name": tok.name, "path": tok.path, "fingerprint": tok.fingerprint}
    tiny.chat_template = ""
    tiny.save()
    return tiny
