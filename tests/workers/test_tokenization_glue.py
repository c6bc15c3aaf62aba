"""workers/tokenization.py: BPE training in a child process — a usable tokenizer whose tiktoken encoding equals its
merges applied in rank order; too large a vocabulary, a cancel, a failure each leave nothing behind."""

import pytest

from apps.system.models import JobStatus
from apps.tokenization import selectors, services
from apps.tokenization.models import Tokenizer
from tests.data_fixtures import TINY_TEXT, artifact_files, no_enqueue, tiny_corpus, user  # noqa: F401
from workers import tokenization as glue
from workers.gpt import tokenizers as toklib

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_clean")]


def _create(corpus, vocab_size, name="glue-bpe", pattern="gpt4"):
    return services.tokenizer_train_create(user=corpus.owner, corpus=corpus, name=name, vocab_size=vocab_size,
                                           pattern=pattern, special_tokens=["<|endoftext|>"])


def test_training_makes_a_tokenizer_tiktoken_runs_exactly(tiny_corpus, no_enqueue):
    row = _create(tiny_corpus, 300)
    assert glue.tokenizer_train(tokenizer_id=row.id) == "succeeded"
    row.refresh_from_db()
    assert row.status == JobStatus.SUCCEEDED and row.n_merges == 43 and row.n_vocab == 300
    assert row.path == "tokenizers/bpe-glue-bpe" and row.fingerprint and row.train_seconds > 0
    tok = selectors.tokenizer_runtime(tokenizer=row)
    held_out = "Speak, citizens! Resolved to famish? 你好 🦙"
    assert tok.encode(held_out) == tok.encode_with_merge_limit(held_out, tok.n_merges)
    assert tok.decode(tok.encode(held_out)) == held_out
    expected = toklib.train_bpe(TINY_TEXT, 300, "gpt4")
    assert tok.merge_pairs == expected.merge_pairs and tok.merge_counts == expected.merge_counts
    assert not [p for p in artifact_files("tokenizers") if ".tmp" in p]


def test_a_vocabulary_larger_than_the_corpus_supports_fails_clearly_and_saves_nothing(tiny_corpus, no_enqueue):
    row = _create(tiny_corpus, 2000)  # passes the cheap byte-count check, but the text runs out of pairs
    before = artifact_files("tokenizers")
    assert glue.tokenizer_train(tokenizer_id=row.id) == "failed"
    row.refresh_from_db()
    assert row.status == JobStatus.FAILED
    assert "the corpus supports only" in row.error and "choose a vocabulary size of at most" in row.error
    assert artifact_files("tokenizers") == before and not row.path


def test_a_cancel_stops_training_and_saves_nothing(tiny_corpus, no_enqueue, monkeypatch):
    row = _create(tiny_corpus, 1000)
    monkeypatch.setattr(services, "tokenizer_record_progress", lambda **kwargs: True)  # "cancel requested"
    before = artifact_files("tokenizers")
    assert glue.tokenizer_train(tokenizer_id=row.id) == "cancelled"
    row.refresh_from_db()
    assert row.status == JobStatus.CANCELLED and artifact_files("tokenizers") == before


def test_a_cancelled_job_is_never_started_and_a_deleted_corpus_fails(tiny_corpus, no_enqueue):
    row = _create(tiny_corpus, 300)
    services.tokenizer_cancel(tokenizer=row, user=tiny_corpus.owner)
    assert glue.tokenizer_train(tokenizer_id=row.id) == "skipped"
    other = _create(tiny_corpus, 300, name="orphan")
    Tokenizer.objects.filter(id=other.id).update(corpus=None)
    assert glue.tokenizer_train(tokenizer_id=other.id) == "failed"
    other.refresh_from_db()
    assert "corpus was deleted" in other.error
