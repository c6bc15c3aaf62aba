"""Writes: corpora (upload, seed, split, delete) and token shards (ensure, cancel, and the job's state changes that the
worker's glue reports). Keyword-only, typed; every state change of a shards job is published to its corpus's group."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from apps.corpora import realtime, selectors
from apps.corpora.models import Corpus, Shards
from apps.corpora.text import CorpusInputError, corpus_stats, count_lines, decode_utf8, join_documents, split_point
from apps.system import files
from apps.system.models import JobStatus
from apps.system.realtime import publish
from apps.system.services import job_request_cancel
from apps.tokenization.models import Tokenizer
from apps.tokenization.selectors import tokenizer_runtime
from workers.gpt.config import missing_chars_error

BUNDLED_DIR = Path(settings.BASE_DIR) / "data" / "corpora"
BUNDLED = [
    {"file": "shakespeare.txt", "name": "Shakespeare",
     "description": "Ten tragedies and Roman plays in the “tiny shakespeare” layout (speaker line, speech, blank "
                    "line). About 1.3 MB of English: the default corpus for training. Public domain."},
    {"file": "song-ci.txt", "name": "Song ci",
     "description": "Song-dynasty ci poems in simplified Chinese (title and author, then the poem). About 1 MB: "
                    "see how tokenizers trained mostly on English spend tokens on Chinese. Public domain, via the "
                    "chinese-poetry collection (MIT)."},
]
MAX_FILES = 100


@dataclass
class Upload:
    """One uploaded file: its name as the user's browser gave it, and its bytes."""
    name: str
    data: bytes


# ----------------------------------------------------------------------------------------------------------------------
# Corpora


def corpus_create(*, name: str, description: str = "", owner=None, uploads: list[Upload] = (), text: str = "",
                  builtin: bool = False, val_fraction: float = 0.1) -> Corpus:
    """Make a corpus from uploaded .txt files (joined in order) and/or pasted text.

    Everything is checked before anything is written: size, UTF-8 (the message names the first bad byte), empty
    text. The text goes to ARTIFACTS_DIR/corpora/<sha256>.txt atomically; if the row cannot be saved, a file no
    other corpus uses is removed again."""
    name = name.strip()
    if not name:
        raise CorpusInputError("Give the corpus a name.")
    data, fields = _prepare(uploads=uploads, text=text, val_fraction=val_fraction)
    return Corpus.objects.create_with_file(data, suffix=".txt", name=name[:100], description=description.strip(),
                                           owner=owner, builtin=builtin, val_fraction=val_fraction, **fields)


def _prepare(*, uploads: list[Upload], text: str, val_fraction: float) -> tuple[bytes, dict]:
    """Check the input and compute the corpus's text (as UTF-8 bytes) and row fields; writes nothing."""
    limit = settings.CORPUS_MAX_BYTES
    total = sum(len(u.data) for u in uploads) + len(text.encode("utf-8", "surrogatepass"))
    if total > limit:
        raise CorpusInputError(f"The corpus would be {_size(total)}, over the limit of {_size(limit)}. Upload less "
                               f"text, or ask the administrator to raise CORPUS_MAX_BYTES.", status=413)
    if len(uploads) > MAX_FILES:
        raise CorpusInputError(f"{len(uploads)} files at once is too many: upload at most {MAX_FILES}.")
    documents, notes, sources = [], {}, []
    for upload in uploads:
        if not upload.name.lower().endswith(".txt"):
            raise CorpusInputError(f"{upload.name} is not a .txt file: upload plain UTF-8 text files (.txt).")
        doc, doc_notes = decode_utf8(upload.data, source=upload.name)
        notes |= doc_notes
        if doc.strip():
            documents.append(doc)
        sources.append({"name": upload.name, "bytes": len(upload.data)})
    if text:
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CorpusInputError(f"The pasted text is not valid Unicode at character {exc.start:,} (a lone "
                                   f"surrogate); paste it again from its source.") from None
        pasted, pasted_notes = decode_utf8(raw, source="The pasted text")
        notes |= pasted_notes
        if pasted.strip():
            documents.append(pasted)
        sources.append({"name": "pasted text", "bytes": len(raw)})
    if not documents:
        what = "the files and the pasted text are" if uploads and text else (
            "the uploaded files are" if uploads else "the pasted text is")
        raise CorpusInputError(f"The corpus is empty: {what} blank. A corpus needs some text to learn from."
                               if sources else "The corpus is empty: choose .txt files or paste some text.")
    corpus_text = join_documents(documents)
    data = corpus_text.encode("utf-8")
    sha = hashlib.sha256(data).hexdigest()
    stats = corpus_stats(corpus_text) | notes | {"sources": sources}
    stats["split"] = split_point(corpus_text, val_fraction)
    return data, {"path": f"corpora/{sha}.txt", "sha256": sha, "size_bytes": len(data), "n_chars": len(corpus_text),
                  "n_lines": count_lines(corpus_text), "stats": stats}


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


def corpus_seed_defaults() -> list[Corpus]:
    """The bundled corpora, created once (idempotent: `manage.py seed` runs at every start). A bundled corpus whose
    file went missing from ARTIFACTS_DIR gets it back, keeping its row (and the runs and shards that refer to it)."""
    seeded = []
    for spec in BUNDLED:
        raw = (BUNDLED_DIR / spec["file"]).read_bytes()
        existing = Corpus.objects.filter(builtin=True, name=spec["name"]).first()
        if existing is None:
            seeded.append(corpus_create(name=spec["name"], description=spec["description"], builtin=True,
                                        uploads=[Upload(spec["file"], raw)]))
            continue
        if not existing.file.exists():
            data, fields = _prepare(uploads=[Upload(spec["file"], raw)], text="", val_fraction=existing.val_fraction)
            files.write_atomic(files.artifact_path(fields["path"]), data)
            Corpus.objects.filter(id=existing.id).update(**fields)
            existing.refresh_from_db()
        seeded.append(existing)
    return seeded


def corpus_set_split(*, corpus: Corpus, val_fraction: float, user) -> Corpus:
    """Change the share held out for validation (0.1 = the last 10 %). Existing shards stay cached under the old
    split; encoding again makes shards for the new one."""
    if not selectors.corpus_may_edit(corpus=corpus, user=user):
        raise PermissionDenied("Only the corpus's owner (or staff) may change its split.")
    if not 0.001 <= val_fraction <= 0.5:
        raise CorpusInputError(f"The validation share must be between 0.1 % and 50 % of the text, got "
                               f"{val_fraction:.1%}.")
    text = selectors.corpus_text(corpus=corpus)
    corpus.val_fraction = val_fraction
    corpus.stats = corpus.stats | {"split": split_point(text, val_fraction)}
    corpus.save(update_fields=["val_fraction", "stats"])
    return corpus


def corpus_delete(*, corpus: Corpus, user) -> None:
    if corpus.builtin or not selectors.corpus_may_edit(corpus=corpus, user=user):
        raise PermissionDenied("Only the owner of an uploaded corpus (or staff) may delete it; bundled corpora stay.")
    if Shards.objects.filter(corpus=corpus, status__in=JobStatus.active()).exists():
        raise CorpusInputError("This corpus is being encoded: cancel the job first, then delete the corpus.",
                               status=409)
    keys = list(corpus.shards.values_list("cache_key", flat=True))
    sha, path = corpus.sha256, corpus.file
    corpus.delete()
    for key in keys:
        shards_remove_files_if_unused(cache_key=key)
    if not Corpus.objects.filter(sha256=sha).exists():
        files.remove(path)


# ----------------------------------------------------------------------------------------------------------------------
# Shards


def shards_cache_key(*, corpus: Corpus, tokenizer) -> str:
    """What decides the tokens: the text, the tokenizer's ids, and where train ends and val begins."""
    blob = json.dumps({"format": 1, "corpus": corpus.sha256, "tokenizer": tokenizer.fingerprint,
                       "split": corpus.split.get("char")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def shards_dir(cache_key: str) -> Path:
    return files.artifact_path("shards", cache_key)


def shards_ensure(*, corpus_id: int, tokenizer_id: int, user=None) -> Shards:
    """The shards of this corpus under this tokenizer: the existing row if it is done or under way, a copy of
    another row's result when the same text was already encoded (cache by content hash), else a new job on the
    `infer` queue. The training app calls this, then waits for status succeeded and reads selectors.shards_files."""
    corpus = Corpus.objects.get(id=corpus_id)
    tokenizer = Tokenizer.objects.get(id=tokenizer_id)
    if tokenizer.status != JobStatus.SUCCEEDED:
        raise CorpusInputError(f"Tokenizer {tokenizer.name} is not ready ({tokenizer.status}); encode with it once "
                               f"it has finished training.", status=409)
    if tokenizer.kind == Tokenizer.Kind.CHAR:
        problem = missing_chars_error(tokenizer=tokenizer.name, corpus=corpus.name,
                                      alphabet=corpus.stats.get("alphabet", ""), chars=_char_vocab(tokenizer))
        if problem:
            raise CorpusInputError(problem)
    key = shards_cache_key(corpus=corpus, tokenizer=tokenizer)
    with transaction.atomic():
        row = Shards.objects.select_for_update().filter(corpus=corpus, tokenizer=tokenizer, cache_key=key).first()
        if row and row.status in JobStatus.active():
            return row
        if row and row.status == JobStatus.SUCCEEDED and selectors.shards_files_exist(shards=row):
            return row
        donor = next((s for s in Shards.objects.filter(cache_key=key, status=JobStatus.SUCCEEDED)
                      if selectors.shards_files_exist(shards=s)), None)
        fields = {"val_fraction": corpus.val_fraction, "error": "", "cancel_requested": False, "requested_by": user,
                  "progress": 0.0, "rate": None, "tokens_per_second": None, "eta_seconds": None, "started": None,
                  "finished": None, "reused": False}
        if donor:
            fields |= {name: getattr(donor, name) for name in (
                "dtype", "train_path", "val_path", "n_train_tokens", "n_val_tokens", "tokens_per_char",
                "tokens_per_byte", "elapsed_seconds")}
            fields |= {"status": JobStatus.SUCCEEDED, "progress": 1.0, "reused": True, "finished": timezone.now()}
        else:
            fields |= {"status": JobStatus.QUEUED, "dtype": "", "train_path": "", "val_path": "",
                       "n_train_tokens": None, "n_val_tokens": None, "tokens_per_char": None,
                       "tokens_per_byte": None, "elapsed_seconds": None}
        if row:
            for name, value in fields.items():
                setattr(row, name, value)
            row.save()
        else:
            row = Shards.objects.create(corpus=corpus, tokenizer=tokenizer, cache_key=key, **fields)
        if not donor:
            shards_id = row.id
            transaction.on_commit(lambda: _enqueue_encode(shards_id))
    _publish_state(row)
    return row


def _char_vocab(tokenizer) -> str:
    return "".join(tokenizer_runtime(tokenizer=tokenizer).chars)


def _enqueue_encode(shards_id: int) -> None:
    from workers.tasks import corpus_encode as corpus_encode_task

    result = corpus_encode_task.delay(shards_id)
    Shards.objects.filter(id=shards_id).update(task_id=result.id or "")


def shards_cancel(*, shards: Shards, user) -> Shards:
    """Ask a job to stop. A queued job (or one whose worker has gone silent) is cancelled at once; a running one
    stops at its next batch, removes what it wrote, and reports cancelled."""
    if not selectors.shards_may_control(shards=shards, user=user):
        raise PermissionDenied("Only the user who started this encoding (or staff) may cancel it.")
    shards, requested = job_request_cancel(Shards, shards.id)
    if requested:
        _publish_state(shards)
    return shards


def shards_remove_files_if_unused(*, cache_key: str) -> None:
    """Delete the token files of a cache key once no shards row refers to them."""
    if not Shards.objects.filter(cache_key=cache_key).exists():
        files.remove(shards_dir(cache_key))


# Called by the worker's glue (workers/corpora.py) ------------------------------------------------------------------


def shards_mark_running(*, shards_id: int) -> Shards | None:
    """Claim a queued job; None if it was cancelled (or claimed) meanwhile."""
    now = timezone.now()
    claimed = Shards.objects.filter(id=shards_id, status=JobStatus.QUEUED, cancel_requested=False).update(
        status=JobStatus.RUNNING, started=now, progress=0.0, updated=now)
    if not claimed:
        return None
    shards = Shards.objects.select_related("corpus", "tokenizer").get(id=shards_id)
    _publish_state(shards)
    return shards


def shards_record_progress(*, shards_id: int, done_chars: int, total_chars: int, tokens: int,
                           elapsed: float) -> bool:
    """Store and publish progress; returns True when the job should stop (cancel requested)."""
    rate = done_chars / elapsed if elapsed > 0 else None
    eta = (total_chars - done_chars) / rate if rate else None
    Shards.objects.filter(id=shards_id, status=JobStatus.RUNNING).update(
        progress=done_chars / total_chars if total_chars else 1.0, rate=rate, eta_seconds=eta,
        tokens_per_second=tokens / elapsed if elapsed > 0 else None, updated=timezone.now())
    shards = Shards.objects.select_related("tokenizer").get(id=shards_id)
    publish(realtime.corpus_group(shards.corpus_id),
            realtime.shards_progress_event(selectors.shards_view(shards)))
    return shards.cancel_requested


def shards_mark_succeeded(*, shards_id: int, dtype: str, n_train_tokens: int, n_val_tokens: int,
                          elapsed: float) -> Shards:
    shards = Shards.objects.select_related("corpus", "tokenizer").get(id=shards_id)
    corpus = shards.corpus
    total = n_train_tokens + n_val_tokens
    shards.status = JobStatus.SUCCEEDED
    shards.progress = 1.0
    shards.eta_seconds = 0.0
    shards.dtype = dtype
    shards.train_path = f"shards/{shards.cache_key}/train.tokens"
    shards.val_path = f"shards/{shards.cache_key}/val.tokens"
    shards.n_train_tokens, shards.n_val_tokens = n_train_tokens, n_val_tokens
    shards.tokens_per_char = total / corpus.n_chars if corpus.n_chars else None
    shards.tokens_per_byte = total / corpus.size_bytes if corpus.size_bytes else None
    shards.elapsed_seconds = elapsed
    shards.rate = corpus.n_chars / elapsed if elapsed > 0 else None
    shards.tokens_per_second = total / elapsed if elapsed > 0 else None
    shards.finished = timezone.now()
    shards.save()
    _publish_state(shards)
    return shards


def shards_mark_failed(*, shards_id: int, error: str) -> None:
    _finish(shards_id, JobStatus.FAILED, error)


def shards_mark_cancelled(*, shards_id: int) -> None:
    _finish(shards_id, JobStatus.CANCELLED, "")


def _finish(shards_id: int, status: str, error: str) -> None:
    Shards.objects.filter(id=shards_id).update(status=status, error=error[:2000], finished=timezone.now(),
                                               eta_seconds=None, updated=timezone.now())
    shards = Shards.objects.select_related("tokenizer").get(id=shards_id)
    _publish_state(shards)


def _publish_state(shards: Shards) -> None:
    publish(realtime.corpus_group(shards.corpus_id), realtime.shards_state_event(selectors.shards_view(shards)))
