"""Fixtures for the data and tokenizer apps (corpora, tokenization), their glue and browser tests. Imported by the
conftest.py of each test folder that needs them."""

import pytest
from django.contrib.auth.models import User

from apps.corpora import services as corpora_services
from apps.tokenization.fingerprint import fingerprint
from apps.tokenization import services as tokenization_services
from apps.tokenization.models import Tokenizer
from workers.gpt import tokenizers as toklib

TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 20


@pytest.fixture
def user(db):
    return User.objects.create_user("ada", password="analytical-engine-1843")


@pytest.fixture
def other_user(db):
    return User.objects.create_user("bob", password="difference-engine-1822")


@pytest.fixture
def staff(db):
    return User.objects.create_user("grace", password="cobol-compiler-1959", is_staff=True)


@pytest.fixture
def builtins(db):
    """The built-in tiktoken rows, by name."""
    return {t.name: t for t in tokenization_services.tokenizer_seed_builtins()}


@pytest.fixture
def bundled(db):
    """The bundled corpora (Shakespeare, Song ci), by name."""
    return {c.name: c for c in corpora_services.corpus_seed_defaults()}


@pytest.fixture
def tiny_corpus(user):
    return corpora_services.corpus_create(name="Tiny", description="a few lines", owner=user, text=TINY_TEXT)


def make_bpe(*, corpus, owner, name="tiny-bpe", vocab_size=300, pattern="gpt4"):
    """A trained BPE tokenizer row, trained in this process (the glue tests run the real job)."""
    from apps.system import files
    from apps.system.models import JobStatus

    tok = toklib.train_bpe(corpus.file.read_text(encoding="utf-8"), vocab_size, pattern, name=name)
    relative = f"tokenizers/bpe-{name}"
    toklib.save_bpe(tok, files.artifact_path(relative))
    return Tokenizer.objects.create(
        name=name, kind=Tokenizer.Kind.BPE, corpus=corpus, owner=owner, vocab_size=vocab_size, pattern=pattern,
        special_tokens=[toklib.ENDOFTEXT], status=JobStatus.SUCCEEDED, progress=1.0, path=relative,
        n_vocab=tok.n_vocab, n_merges=tok.n_merges, fingerprint=fingerprint(tok))


@pytest.fixture
def tiny_bpe(tiny_corpus, user):
    return make_bpe(corpus=tiny_corpus, owner=user)


@pytest.fixture
def no_enqueue(monkeypatch):
    """Record the jobs services would queue instead of sending them to Redis (unit tests have no worker)."""
    sent = []

    class Result:
        id = "test-task-id"

    from workers import tasks

    for name in ("corpus_encode", "tokenizer_train"):
        monkeypatch.setattr(getattr(tasks, name), "delay", lambda *args, _n=name: sent.append((_n, args)) or Result())
    return sent


def artifact_files(sub=""):
    """Every file under ARTIFACTS_DIR/<sub> (to check that nothing half-written is left behind)."""
    from apps.system import files

    root = files.artifact_path(sub)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
