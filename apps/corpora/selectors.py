"""Reads: corpora a user may see, their text and preview, and token shards (for pages, and for the training app)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet

from apps.corpora.models import Corpus, Shards
from apps.system import files
from apps.system.models import JobStatus

PREVIEW_BYTES = 6000
DEFAULT_CORPUS_NAME = "Shakespeare"


def corpus_list(*, user) -> QuerySet[Corpus]:
    return Corpus.objects.visible_to(user).select_related("owner")


def corpus_groups(*, user) -> list[dict]:
    """The data sets a user may see, grouped by kind in Corpus.Kind's order: [{"kind", "label", "corpora"}]."""
    corpora = list(corpus_list(user=user))
    return [{"kind": kind, "label": label, "corpora": [c for c in corpora if c.kind == kind]}
            for kind, label in Corpus.Kind.choices]


def corpus_get(*, corpus_id: int, user) -> Corpus:
    """A corpus the user may see; Corpus.DoesNotExist otherwise (the views answer 404: no hint that it exists)."""
    return corpus_list(user=user).get(id=corpus_id)


def corpus_default() -> Corpus | None:
    """The corpus training starts from unless told otherwise: the bundled Shakespeare."""
    return Corpus.objects.filter(builtin=True, name=DEFAULT_CORPUS_NAME).first()


def corpus_may_edit(*, corpus: Corpus, user) -> bool:
    if not user.is_authenticated:
        return False
    return user.is_staff or (corpus.owner_id is not None and corpus.owner_id == user.id)


def corpus_text(*, corpus: Corpus) -> str:
    return corpus.file.read_text(encoding="utf-8")


def corpus_preview(*, corpus: Corpus, offset: int = 0, length: int = PREVIEW_BYTES) -> dict:
    """A window of the text starting at byte `offset` (a character boundary), cut back to whole characters."""
    offset = max(0, min(offset, corpus.size_bytes))
    if not corpus.file.exists():
        return {"text": "", "offset": offset, "next": None, "percent": 0, "missing": str(corpus.file)}
    with open(corpus.file, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    text = data.decode("utf-8", errors="ignore")  # only a character cut at the window's end can be incomplete
    end = offset + len(text.encode("utf-8"))
    return {"text": text, "offset": offset, "next": end if end < corpus.size_bytes else None,
            "percent": 100 * end / corpus.size_bytes if corpus.size_bytes else 100}


def corpus_split_preview(*, corpus: Corpus, context: int = 240) -> dict:
    """The text on both sides of the train/validation boundary."""
    at = corpus.split.get("byte", corpus.size_bytes)
    if not corpus.file.exists():
        return {"before": "", "after": ""}
    with open(corpus.file, "rb") as f:
        f.seek(max(0, at - context * 2))
        before = f.read(at - max(0, at - context * 2))
        after = f.read(context * 2)
    return {"before": before.decode("utf-8", errors="ignore")[-context:],
            "after": after.decode("utf-8", errors="ignore")[:context]}


# ----------------------------------------------------------------------------------------------------------------------
# Shards


def shards_list(*, corpus: Corpus) -> QuerySet[Shards]:
    return corpus.shards.select_related("tokenizer").order_by("-created", "-id")


def shards_get(*, shards_id: int) -> Shards:
    return Shards.objects.select_related("corpus", "tokenizer").get(id=shards_id)


def shards_may_control(*, shards: Shards, user) -> bool:
    if not user.is_authenticated:
        return False
    return user.is_staff or shards.requested_by_id == user.id


def shards_files_exist(*, shards: Shards) -> bool:
    return bool(shards.train_path and shards.val_path) and files.artifact_path(shards.train_path).is_file() and (
        files.artifact_path(shards.val_path).is_file())


@dataclass(frozen=True)
class ShardFiles:
    """Where a finished encoding's tokens are. Read each with workers.gpt.data.open_tokens(path): a memmap of
    `dtype` ("uint16" or "uint32") ids."""

    train: Path
    val: Path
    dtype: str
    n_train_tokens: int
    n_val_tokens: int
    n_vocab: int
    tokenizer_name: str


def shards_files(*, shards_id: int) -> ShardFiles:
    """The files of succeeded shards; ValueError saying what is wrong otherwise (not finished, files gone)."""
    shards = shards_get(shards_id=shards_id)
    if shards.status != JobStatus.SUCCEEDED:
        raise ValueError(f"shards {shards_id} ({shards.corpus} × {shards.tokenizer}) are {shards.status}, not "
                         f"succeeded: wait for the encoding to finish, or start it again")
    if not shards_files_exist(shards=shards):
        raise ValueError(f"the token files of shards {shards_id} are missing under {settings.ARTIFACTS_DIR}: "
                         f"encode {shards.corpus} with {shards.tokenizer} again")
    return ShardFiles(train=files.artifact_path(shards.train_path), val=files.artifact_path(shards.val_path),
                      dtype=shards.dtype,
                      n_train_tokens=shards.n_train_tokens, n_val_tokens=shards.n_val_tokens,
                      n_vocab=shards.tokenizer.n_vocab, tokenizer_name=shards.tokenizer.name)


def shards_view(shards: Shards) -> dict:
    """The state a shards row shows on the page and an event carries (small and JSON-safe)."""
    return {
        "id": shards.id,
        "corpus_id": shards.corpus_id,
        "tokenizer": shards.tokenizer.name,
        "tokenizer_kind": shards.tokenizer.kind,
        "n_vocab": shards.tokenizer.n_vocab,
        "status": shards.status,
        "active": shards.status in JobStatus.active(),
        "progress": shards.progress,
        "percent": round(100 * shards.progress, 1),
        "rate": shards.rate,
        "tokens_per_second": shards.tokens_per_second,
        "eta_seconds": shards.eta_seconds,
        "error": shards.error,
        "dtype": shards.dtype,
        "train_path": shards.train_path,
        "val_path": shards.val_path,
        "n_train_tokens": shards.n_train_tokens,
        "n_val_tokens": shards.n_val_tokens,
        "tokens_per_char": shards.tokens_per_char,
        "tokens_per_byte": shards.tokens_per_byte,
        "elapsed_seconds": shards.elapsed_seconds,
        "val_fraction": shards.val_fraction,
        "reused": shards.reused,
        "cancel_requested": shards.cancel_requested,
        "requested_by_id": shards.requested_by_id,
    }
