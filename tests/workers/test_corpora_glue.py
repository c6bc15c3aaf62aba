"""workers/corpora.py: encoding a corpus into shards — exactly tiktoken's ids, in files training can open, with
progress; a cancel or a failure leaves nothing behind."""

import json

import numpy as np
import pytest

from apps.corpora import selectors, services
from apps.corpora.models import Shards
from apps.system.models import JobStatus
from apps.tokenization import services as tokenization_services
from tests.data_fixtures import (TINY_TEXT, artifact_files, builtins, bundled, no_enqueue, other_user, staff,  # noqa: F401
                                 tiny_bpe, tiny_corpus, user)
from workers import corpora as glue
from workers.gpt import tokenizers as toklib
from workers.gpt.data import open_tokens

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_clean")]

TRICKY = ("Hello  world \n\nSecond  line\twith tabs.\n  indented line\nThe end!\n"
          "Numbers 1234567 and 3.14159\nCAPS and 'quotes' don't won't\n"
          "中文没有空格，也能切分。\n🦙 emoji line\n<|endoftext|>special text\n   \nlast line") * 40


@pytest.mark.parametrize("name", ["gpt2", "p50k_base", "cl100k_base", "o200k_base"])
def test_encoding_in_chunks_gives_exactly_the_ids_of_the_whole_text(monkeypatch, name):
    tok = toklib.get_builtin(name)
    shakespeare = open(glue.__file__.replace("workers/corpora.py", "data/corpora/shakespeare.txt")).read()[:60_000]
    for text in (TRICKY, shakespeare):
        spans = list(glue.chunks(text, 0, len(text), size=500))
        assert len(spans) > 10 and spans[0][0] == 0 and spans[-1][1] == len(text)
        out = []
        monkeypatch.setattr(glue, "CHUNK_CHARS", 500)
        batches = []
        total = glue.encode_span(tok, text, 0, len(text), lambda a: out.extend(list(a)),
                                 lambda chars, tokens: batches.append((chars, tokens)))
        assert out == tok.encode(text) and total == len(out)
        assert len(batches) > 3 and sum(c for c, _ in batches) == len(text)


def test_a_trained_bpe_and_a_character_tokenizer_chunk_exactly_too(monkeypatch):
    monkeypatch.setattr(glue, "CHUNK_CHARS", 300)
    for tok in (toklib.train_bpe(TRICKY, 400, "gpt2"), toklib.train_bpe(TRICKY, 400, "gpt4"),
                toklib.CharTokenizer.from_text(TRICKY)):
        out = []
        glue.encode_span(tok, TRICKY, 0, len(TRICKY), lambda a: out.extend(np.asarray(a).tolist()), lambda c, t: None)
        assert out == tok.encode(TRICKY)


def test_a_corpus_is_encoded_into_train_and_val_files(tiny_corpus, builtins, no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=tiny_corpus.owner)
    assert glue.corpus_encode(shards_id=shards.id) == "succeeded"
    shards.refresh_from_db()
    files = selectors.shards_files(shards_id=shards.id)
    text = tiny_corpus.file.read_text()
    cut = tiny_corpus.split["char"]
    enc = toklib.get_builtin("gpt2")
    train, val = open_tokens(files.train), open_tokens(files.val)
    assert train.dtype == np.uint16 and shards.dtype == "uint16"
    assert train.tolist() == enc.encode(text[:cut]) and val.tolist() == enc.encode(text[cut:])
    assert (shards.n_train_tokens, shards.n_val_tokens) == (len(train), len(val))
    assert shards.tokens_per_char == pytest.approx((len(train) + len(val)) / len(text))
    assert shards.progress == 1.0 and shards.elapsed_seconds > 0 and shards.rate > 0
    meta = json.loads((files.train.parent / "meta.json").read_text())
    assert meta["tokenizer"] == "gpt2" and meta["n_train_tokens"] == len(train)
    assert not [p for p in artifact_files("shards") if ".tmp" in p]


def test_a_vocabulary_over_65536_is_stored_as_uint32(tiny_corpus, builtins, no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["o200k_base"].id)
    glue.corpus_encode(shards_id=shards.id)
    files = selectors.shards_files(shards_id=shards.id)
    assert files.dtype == "uint32" and open_tokens(files.train).dtype == np.uint32


def test_progress_is_published_and_a_cancel_stops_the_job_leaving_nothing(tiny_corpus, builtins, no_enqueue,
                                                                         monkeypatch):
    monkeypatch.setattr(glue, "CHUNK_CHARS", 200)
    monkeypatch.setattr(glue, "PROGRESS_EVERY", 0)
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=tiny_corpus.owner)
    reports = []
    record = services.shards_record_progress

    def record_then_cancel(**kwargs):
        reports.append(kwargs["done_chars"])
        if len(reports) == 3:
            Shards.objects.filter(id=shards.id).update(cancel_requested=True)
        return record(**kwargs)

    monkeypatch.setattr(services, "shards_record_progress", record_then_cancel)
    before = artifact_files("shards")
    assert glue.corpus_encode(shards_id=shards.id) == "cancelled"
    shards.refresh_from_db()
    assert shards.status == JobStatus.CANCELLED and reports == sorted(reports) and len(reports) == 3
    assert 0 < shards.progress < 1
    assert artifact_files("shards") == before  # no token files, no temporary folder


def test_a_failure_is_recorded_with_its_reason_and_leaves_nothing(tiny_corpus, bundled, no_enqueue, user):
    char = tokenization_services.tokenizer_char_create(corpus=tiny_corpus, name="tiny-char", user=user)
    # bypass shards_ensure's up-front check to see the worker's own message
    shards = Shards.objects.create(corpus=bundled["Song ci"], tokenizer=char, cache_key="x" * 64, val_fraction=0.1)
    before = artifact_files("shards")
    assert glue.corpus_encode(shards_id=shards.id) == "failed"
    shards.refresh_from_db()
    assert shards.status == JobStatus.FAILED and "not in the vocabulary of 'tiny-char'" in shards.error
    assert artifact_files("shards") == before


def test_a_job_cancelled_before_it_started_is_skipped(tiny_corpus, builtins, no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=tiny_corpus.owner)
    services.shards_cancel(shards=shards, user=tiny_corpus.owner)
    assert glue.corpus_encode(shards_id=shards.id) == "skipped"
