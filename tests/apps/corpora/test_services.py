"""Corpora and shards services: what is written, what is refused (and then nothing is written), the cache."""

import hashlib
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.test import override_settings

from apps.corpora import selectors, services
from apps.corpora.models import Corpus, CorpusQuerySet, Shards
from apps.system.models import JobStatus
from apps.corpora.services import Upload
from apps.corpora.text import CorpusInputError
from apps.tokenization import services as tokenization_services
from tests.data_fixtures import TINY_TEXT, artifact_files

pytestmark = pytest.mark.django_db


def test_uploads_are_joined_checked_and_stored_by_content_hash(user):
    corpus = services.corpus_create(name="Two plays", owner=user, uploads=[
        Upload("a.txt", "ROMEO:\nHello.".encode()), Upload("b.txt", "\ufeffJULIET:\r\nHi.\r\n".encode())])
    text = "ROMEO:\nHello.\n\nJULIET:\nHi.\n"
    assert corpus.file.read_text() == text
    assert corpus.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert corpus.path == f"corpora/{corpus.sha256}.txt"
    assert (corpus.size_bytes, corpus.n_chars, corpus.n_lines) == (len(text), len(text), 5)
    assert corpus.stats["bom_removed"] and corpus.stats["crlf_normalized"]
    assert [s["name"] for s in corpus.stats["sources"]] == ["a.txt", "b.txt"]
    assert corpus.stats["split"]["train_chars"] + corpus.stats["split"]["val_chars"] == len(text)


@pytest.mark.parametrize("kwargs, status, message", [
    ({"uploads": [Upload("latin1.txt", b"ok\ncaf\xe9\n")]}, 400, "latin1.txt is not valid UTF-8: byte 6 (line 2, column 4)"),
    ({"uploads": [Upload("empty.txt", b"  \n\n")]}, 400, "The corpus is empty"),
    ({"text": "   "}, 400, "The corpus is empty"),
    ({}, 400, "choose .txt files or paste some text"),
    ({"uploads": [Upload("notes.pdf", b"%PDF")]}, 400, "notes.pdf is not a .txt file"),
    ({"uploads": [Upload("big.txt", b"x" * 2048)]}, 413, "over the limit of 1.0 KB"),
    ({"text": "\ud800 lone surrogate"}, 400, "not valid Unicode"),
])
@override_settings(CORPUS_MAX_BYTES=1024)
def test_bad_uploads_are_refused_and_nothing_is_written(user, kwargs, status, message):
    before = artifact_files("corpora")
    with pytest.raises(CorpusInputError) as exc:
        services.corpus_create(name="bad", owner=user, **kwargs)
    assert message in str(exc.value)
    assert exc.value.status == status
    assert artifact_files("corpora") == before
    assert not Corpus.objects.exists()


def test_a_failed_save_removes_the_file_it_wrote(user, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(CorpusQuerySet, "create", boom)  # the row's save, inside Corpus.objects.create_with_file
    before = artifact_files("corpora")
    with pytest.raises(RuntimeError):
        services.corpus_create(name="x", owner=user, text="some unique text 8c1f")
    assert artifact_files("corpora") == before


def test_identical_texts_share_a_file_until_the_last_is_deleted(user):
    a = services.corpus_create(name="a", owner=user, text="same text 42\n")
    b = services.corpus_create(name="b", owner=user, text="same text 42\n")
    assert a.file == b.file
    services.corpus_delete(corpus=a, user=user)
    assert b.file.exists()
    services.corpus_delete(corpus=b, user=user)
    assert not b.file.exists()


def test_seeding_is_idempotent_and_bundled_corpora_cannot_be_deleted(user, staff):
    first = services.corpus_seed_defaults()
    again = services.corpus_seed_defaults()
    assert [c.id for c in first] == [c.id for c in again]
    assert [c.name for c in first] == ["Shakespeare", "Song ci"]
    shakespeare = first[0]
    assert shakespeare.builtin and shakespeare.owner is None
    assert shakespeare.size_bytes == 1_319_312 and shakespeare.stats["distinct_chars"] == 63
    assert selectors.corpus_default() == shakespeare
    with pytest.raises(PermissionDenied):
        services.corpus_delete(corpus=shakespeare, user=staff)


def test_uploads_are_private_to_their_owner_and_staff(tiny_corpus, other_user, staff, bundled):
    from django.contrib.auth.models import AnonymousUser

    assert tiny_corpus in selectors.corpus_list(user=tiny_corpus.owner)
    assert tiny_corpus not in selectors.corpus_list(user=other_user)
    assert tiny_corpus not in selectors.corpus_list(user=AnonymousUser())
    assert tiny_corpus in selectors.corpus_list(user=staff)
    assert set(selectors.corpus_list(user=AnonymousUser())) == set(bundled.values())


def test_the_owner_changes_the_split_others_may_not(tiny_corpus, other_user):
    corpus = services.corpus_set_split(corpus=tiny_corpus, val_fraction=0.25, user=tiny_corpus.owner)
    assert corpus.val_fraction == 0.25
    assert 0.2 < corpus.split["val_chars"] / corpus.n_chars < 0.3
    with pytest.raises(PermissionDenied):
        services.corpus_set_split(corpus=tiny_corpus, val_fraction=0.2, user=other_user)
    with pytest.raises(CorpusInputError, match="between 0.1 % and 50 %"):
        services.corpus_set_split(corpus=tiny_corpus, val_fraction=0.9, user=tiny_corpus.owner)


def test_ensure_queues_one_job_per_pair_when_the_transaction_commits(tiny_corpus, builtins, no_enqueue,
                                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id,
                                        user=tiny_corpus.owner)
    assert shards.status == JobStatus.QUEUED and shards.val_fraction == 0.1
    assert no_enqueue == [("corpus_encode", (shards.id,))]
    assert Shards.objects.get(id=shards.id).task_id == "test-task-id"
    again = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id)
    assert again.id == shards.id and len(no_enqueue) == 1


def test_the_same_text_encoded_before_is_reused_not_redone(tiny_corpus, builtins, no_enqueue, user):
    from workers.corpora import corpus_encode

    first = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=user)
    assert corpus_encode(shards_id=first.id) == "succeeded"
    copy = services.corpus_create(name="Tiny again", owner=user, text=TINY_TEXT)
    reused = services.shards_ensure(corpus_id=copy.id, tokenizer_id=builtins["gpt2"].id, user=user)
    assert reused.status == JobStatus.SUCCEEDED and reused.reused
    assert reused.train_path == Shards.objects.get(id=first.id).train_path
    assert reused.n_train_tokens == Shards.objects.get(id=first.id).n_train_tokens
    assert no_enqueue == []  # nothing was queued: the worker was only called by hand above
    files = selectors.shards_files(shards_id=reused.id)
    assert files.dtype == "uint16" and files.n_vocab == 50257 and files.train.exists()


def test_a_new_split_is_a_new_encoding(tiny_corpus, builtins, no_enqueue, user):
    from workers.corpora import corpus_encode

    first = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=user)
    corpus_encode(shards_id=first.id)
    services.corpus_set_split(corpus=tiny_corpus, val_fraction=0.3, user=user)
    second = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=user)
    assert second.id != first.id and second.status == JobStatus.QUEUED and second.cache_key != first.cache_key


def test_a_character_tokenizer_missing_characters_is_refused_up_front(bundled, tiny_corpus, user):
    char = tokenization_services.tokenizer_char_create(corpus=tiny_corpus, name="tiny-char", user=user)
    with pytest.raises(CorpusInputError, match=r"tiny-char has no id for \d+ character\(s\) of Song ci"):
        services.shards_ensure(corpus_id=bundled["Song ci"].id, tokenizer_id=char.id, user=user)
    assert not Shards.objects.exists()


def test_a_tokenizer_still_training_cannot_encode(tiny_corpus, user, no_enqueue):
    row = tokenization_services.tokenizer_train_create(user=user, corpus=tiny_corpus, name="pending", vocab_size=300,
                                                       pattern="gpt4", special_tokens=["<|endoftext|>"])
    with pytest.raises(CorpusInputError, match="not ready"):
        services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=row.id)


def test_cancel_stops_a_queued_job_at_once_and_only_its_owner_or_staff_may(tiny_corpus, builtins, user, other_user,
                                                                          staff, no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=user)
    with pytest.raises(PermissionDenied):
        services.shards_cancel(shards=shards, user=other_user)
    assert services.shards_cancel(shards=shards, user=user).status == JobStatus.CANCELLED
    # a cancelled job is never started
    assert services.shards_mark_running(shards_id=shards.id) is None
    # a cancelled pair can be asked for again
    again = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=user)
    assert again.id == shards.id and again.status == JobStatus.QUEUED
    assert services.shards_cancel(shards=again, user=staff).status == JobStatus.CANCELLED


def test_cancelling_a_running_job_asks_it_to_stop_unless_its_worker_went_silent(tiny_corpus, builtins, user,
                                                                               no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=user)
    services.shards_mark_running(shards_id=shards.id)
    running = services.shards_cancel(shards=shards, user=user)
    assert running.status == JobStatus.RUNNING and running.cancel_requested
    Shards.objects.filter(id=shards.id).update(updated=running.updated - timedelta(minutes=5))
    gone = services.shards_cancel(shards=running, user=user)
    assert gone.status == JobStatus.CANCELLED and "stopped reporting" in gone.error


def test_shard_files_say_what_is_wrong_before_they_exist(tiny_corpus, builtins, user, no_enqueue):
    shards = services.shards_ensure(corpus_id=tiny_corpus.id, tokenizer_id=builtins["gpt2"].id, user=user)
    with pytest.raises(ValueError, match="queued, not succeeded"):
        selectors.shards_files(shards_id=shards.id)


def test_seeding_restores_a_missing_bundled_file_and_keeps_the_row(bundled):
    from apps.tokenization.services import tokenizer_seed_defaults

    shakespeare = bundled["Shakespeare"]
    char = next(t for t in tokenizer_seed_defaults(shakespeare=shakespeare) if t.name == "shakespeare-char")
    shakespeare.file.unlink()
    (char_path := shakespeare.file.parents[1] / char.path).unlink()
    again = services.corpus_seed_defaults()
    assert again[0].id == shakespeare.id and again[0].file.exists()
    assert again[0].file.read_bytes() == (services.BUNDLED_DIR / "shakespeare.txt").read_bytes()
    assert tokenizer_seed_defaults(shakespeare=again[0])[-1].id == char.id and char_path.exists()
