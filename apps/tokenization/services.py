"""Writes: tokenizers (built-in rows, character-level from a corpus, BPE training jobs, cancel, delete) and the
training job's state changes that the worker's glue reports; each is published to the tokenizer's group."""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.corpora.models import Corpus
from apps.system import files
from apps.system.limits import rate_limit
from apps.system.models import JobStatus
from apps.system.realtime import publish
from apps.system.services import job_request_cancel
from apps.tokenization import analysis, realtime, selectors
from apps.tokenization.models import Tokenizer
from apps.tokenization.selectors import TokenizationError
from workers.gpt import tokenizers as toklib

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
# names that would collide with the pages under /tokenizers/
RESERVED_NAMES = {"library", "train", "char", "tokenize", "more", "decode", "api", "new", "static"}
MAX_SPECIAL_TOKENS = 16


def tokenize_rate_limit(*, user, client: str, scope: str) -> None:
    """Anonymous visitors may tokenize TOKENIZE_ANON_PER_MINUTE times a minute per address and scope ("playground",
    "api"); signed-in users are not limited. Raises apps.system.limits.RateLimited (429, or 503 without Redis)."""
    if user is not None and user.is_authenticated:
        return
    limit = settings.TOKENIZE_ANON_PER_MINUTE
    rate_limit(scope=f"tokenization.{scope}", who=client, limit=limit,
               message=_("Too many requests: visitors who are not signed in may make %(limit)s a minute. Try again in "
                         "{retry_after} s, or sign in to lift the limit.") % {"limit": limit})


def tokenizer_check_name(name: str) -> str:
    name = name.strip()
    if not NAME_RE.fullmatch(name):
        raise TokenizationError(_("A tokenizer name is 2 to 64 characters: lowercase letters, digits, and . _ - "
                                  "(starting with a letter or digit), e.g. shakespeare-bpe-4096."))
    if name in RESERVED_NAMES:
        raise TokenizationError(_("%(name)r is reserved for a page of the app: choose another name.") % {"name": name})
    if Tokenizer.objects.filter(name=name).exists():
        raise TokenizationError(_("A tokenizer called %(name)r exists already: choose another name.") % {"name": name})
    return name


def parse_special_tokens(raw: str) -> list[str]:
    """'<|endoftext|> <|pad|>' (spaces, commas or lines between) -> the list; <|endoftext|> must be among them."""
    tokens = [t for t in re.split(r"[\s,]+", raw.strip()) if t]
    if toklib.ENDOFTEXT not in tokens:
        raise TokenizationError(_("The special tokens must include %(eot)s: documents are joined with it "
                                  "when training a model.") % {"eot": toklib.ENDOFTEXT})
    if len(set(tokens)) != len(tokens):
        raise TokenizationError(_("A special token is listed twice."))
    if len(tokens) > MAX_SPECIAL_TOKENS:
        raise TokenizationError(_("At most %(n)s special tokens.") % {"n": MAX_SPECIAL_TOKENS})
    if any(len(t) > 64 for t in tokens):
        raise TokenizationError(_("A special token is at most 64 characters long."))
    return tokens


# ----------------------------------------------------------------------------------------------------------------------
# Built-in and character-level tokenizers (instant: no job)


def tokenizer_seed_builtins() -> list[Tokenizer]:
    """A row for each offline tiktoken encoding (idempotent)."""
    rows = []
    for name in toklib.BUILTIN_NAMES:
        info = toklib.describe(name)
        row = Tokenizer.objects.filter(name=name).first()
        if row is None:
            row = Tokenizer.objects.create(
                name=name, kind=Tokenizer.Kind.TIKTOKEN, builtin=True, description=info["description"],
                n_vocab=info["n_vocab"], n_merges=info["n_merges"], pattern=name,
                special_tokens=list(info["special_tokens"]), status=JobStatus.SUCCEEDED, progress=1.0,
                fingerprint=analysis.fingerprint(toklib.get_builtin(name)), finished=timezone.now())
        rows.append(row)
    return rows


def tokenizer_char_create(*, corpus: Corpus, name: str, user=None, builtin: bool = False) -> Tokenizer:
    """nanoGPT's shakespeare_char: one id per distinct character of the corpus, in sorted order."""
    name = tokenizer_check_name(name)
    alphabet = corpus.stats.get("alphabet")
    if not alphabet:
        raise TokenizationError(_("%(corpus)s has no characters to build a vocabulary from.") % {"corpus": corpus.name})
    tok = toklib.CharTokenizer(alphabet, name=name)
    data = tok.to_json().encode("utf-8")
    relative = f"tokenizers/char-{name}.json"
    path = files.artifact_path(relative)
    files.write_atomic(path, data)
    try:
        return Tokenizer.objects.create(
            name=name, kind=Tokenizer.Kind.CHAR, builtin=builtin, corpus=corpus, owner=None if builtin else user,
            description=f"One id per character of {corpus.name} ({len(alphabet):,} characters).",
            n_vocab=tok.n_vocab, status=JobStatus.SUCCEEDED, progress=1.0, path=relative,
            fingerprint=analysis.fingerprint(tok), finished=timezone.now())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def tokenizer_seed_defaults(*, shakespeare: Corpus | None) -> list[Tokenizer]:
    rows = tokenizer_seed_builtins()
    if shakespeare is not None:
        row = Tokenizer.objects.filter(name="shakespeare-char").first()
        if row is None:
            row = tokenizer_char_create(corpus=shakespeare, name="shakespeare-char", builtin=True)
        elif not (files.artifact_path(row.path)).exists():  # its file went missing: write it again, keep the row
            tok = toklib.CharTokenizer(shakespeare.stats["alphabet"], name=row.name)
            files.write_atomic(files.artifact_path(row.path), tok.to_json().encode("utf-8"))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Byte-level BPEs imported with a model (the registry writes the files and asks for the row)


def tokenizer_imported_create(*, name: str, model_name: str, path: str, owner=None) -> Tokenizer:
    """A row for the tokenizer an imported model brought (its directory at `path` under ARTIFACTS_DIR, already
    written by tokenizers.save_imported), so the playground offers it. Named after the model, made unique; built in
    when the model has no owner (the seeded SmolLM2)."""
    tok = toklib.load_imported(files.artifact_path(path))
    return Tokenizer.objects.create(
        name=_unique_name(name[:60]), kind=Tokenizer.Kind.IMPORTED, builtin=owner is None, owner=owner,
        description=f"The byte-level BPE of {model_name}, imported with it.", n_vocab=tok.n_vocab,
        n_merges=tok.n_merges, special_tokens=list(tok.special_tokens), status=JobStatus.SUCCEEDED, progress=1.0,
        path=path, fingerprint=analysis.fingerprint(tok), finished=timezone.now())


def tokenizer_imported_delete(*, tokenizer_id: int) -> None:
    """Delete the row of an imported model's tokenizer, when the registry deletes the last model using it (its
    files go with the model's folder)."""
    Tokenizer.objects.filter(pk=tokenizer_id, kind=Tokenizer.Kind.IMPORTED).delete()


def _unique_name(base: str) -> str:
    name, n = base, 2
    while Tokenizer.objects.filter(name=name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


# ----------------------------------------------------------------------------------------------------------------------
# BPE training (a job on the `infer` queue)


def tokenizer_train_create(*, user, corpus: Corpus, name: str, vocab_size: int, pattern: str,
                           special_tokens: list[str]) -> Tokenizer:
    """Check the request, make the row, and queue the job when the transaction commits."""
    name = tokenizer_check_name(name)
    if pattern not in toklib.PATTERNS:
        raise TokenizationError(_("Unknown split pattern %(pattern)r: choose gpt2 or gpt4.") % {"pattern": pattern})
    low = toklib.MIN_VOCAB_SIZE + len(special_tokens)
    if not low <= vocab_size <= toklib.MAX_VOCAB_SIZE:
        raise TokenizationError(_("The vocabulary size must be between %(low)s (256 bytes + %(n)s "
                                  "special token(s)) and %(high)s (ids must fit in uint16); "
                                  "try 512, 1,024 or 4,096.") % {"low": f"{low:,}", "n": len(special_tokens),
                                                                 "high": f"{toklib.MAX_VOCAB_SIZE:,}"})
    merges = vocab_size - low
    if merges > corpus.size_bytes - 1:
        raise TokenizationError(_("%(corpus)s is %(size)s bytes, so it supports at most "
                                  "%(merges)s merges: choose a vocabulary size of at most "
                                  "%(vocab)s, or a larger corpus.") % {
                                    "corpus": corpus.name, "size": f"{corpus.size_bytes:,}",
                                    "merges": f"{max(0, corpus.size_bytes - 1):,}",
                                    "vocab": f"{low + max(0, corpus.size_bytes - 1):,}"})
    with transaction.atomic():
        row = Tokenizer.objects.create(
            name=name, kind=Tokenizer.Kind.BPE, corpus=corpus, owner=user, vocab_size=vocab_size, pattern=pattern,
            special_tokens=special_tokens, status=JobStatus.QUEUED,
            description=f"Byte-level BPE trained on {corpus.name}: {vocab_size:,} tokens, {pattern} split pattern.")
        row_id = row.id
        transaction.on_commit(lambda: _enqueue_train(row_id))
    return row


def _enqueue_train(tokenizer_id: int) -> None:
    from workers.tasks import tokenizer_train as tokenizer_train_task

    result = tokenizer_train_task.delay(tokenizer_id)
    Tokenizer.objects.filter(id=tokenizer_id).update(task_id=result.id or "")


def tokenizer_cancel(*, tokenizer: Tokenizer, user) -> Tokenizer:
    if not selectors.tokenizer_may_control(tokenizer=tokenizer, user=user):
        raise PermissionDenied(_("Only the user who started this training (or staff) may cancel it."))
    tokenizer, requested = job_request_cancel(Tokenizer, tokenizer.id)
    if requested:
        _publish_state(tokenizer)
    return tokenizer


def tokenizer_delete(*, tokenizer: Tokenizer, user) -> None:
    if not selectors.tokenizer_may_control(tokenizer=tokenizer, user=user):
        raise PermissionDenied(_("Only the owner of a tokenizer (or staff) may delete it; built-in ones stay."))
    if tokenizer.status in JobStatus.active():
        raise TokenizationError("This tokenizer is still training: cancel it first.", status=409)
    from apps.corpora.services import shards_remove_files_if_unused

    keys = list(tokenizer.shards.values_list("cache_key", flat=True))
    path = tokenizer.path
    tokenizer.delete()
    for key in keys:
        shards_remove_files_if_unused(cache_key=key)
    if path:
        files.remove(files.artifact_path(path))


# Called by the worker's glue (workers/tokenization.py) -------------------------------------------------------------


def tokenizer_mark_running(*, tokenizer_id: int) -> Tokenizer | None:
    now = timezone.now()
    claimed = Tokenizer.objects.filter(id=tokenizer_id, status=JobStatus.QUEUED, cancel_requested=False).update(
        status=JobStatus.RUNNING, started=now, progress=0.0, phase="reading the corpus", updated=now)
    if not claimed:
        return None
    row = Tokenizer.objects.select_related("corpus").get(id=tokenizer_id)
    _publish_state(row)
    return row


def tokenizer_record_progress(*, tokenizer_id: int, done: int, total: int, elapsed: float, phase: str) -> bool:
    """Store and publish training progress; True when the job should stop."""
    rate = done / elapsed if elapsed > 0 and done else None
    Tokenizer.objects.filter(id=tokenizer_id, status=JobStatus.RUNNING).update(
        progress=done / total if total else 0.0, rate=rate, eta_seconds=(total - done) / rate if rate else None,
        phase=phase[:40], updated=timezone.now())
    row = Tokenizer.objects.get(id=tokenizer_id)
    publish(realtime.tokenizer_group(row.id), realtime.training_progress_event(selectors.tokenizer_view(row)))
    return row.cancel_requested


def tokenizer_mark_succeeded(*, tokenizer_id: int, path: str, n_vocab: int, n_merges: int, fingerprint: str,
                             train_seconds: float) -> Tokenizer:
    Tokenizer.objects.filter(id=tokenizer_id).update(
        status=JobStatus.SUCCEEDED, progress=1.0, eta_seconds=0.0, phase="", path=path, n_vocab=n_vocab,
        n_merges=n_merges, fingerprint=fingerprint, train_seconds=train_seconds, finished=timezone.now(),
        updated=timezone.now())
    row = Tokenizer.objects.get(id=tokenizer_id)
    _publish_state(row)
    return row


def tokenizer_mark_failed(*, tokenizer_id: int, error: str) -> None:
    _finish(tokenizer_id, JobStatus.FAILED, error)


def tokenizer_mark_cancelled(*, tokenizer_id: int) -> None:
    _finish(tokenizer_id, JobStatus.CANCELLED, "")


def _finish(tokenizer_id: int, status: str, error: str) -> None:
    Tokenizer.objects.filter(id=tokenizer_id).update(status=status, error=error[:2000], phase="", eta_seconds=None,
                                                     finished=timezone.now(), updated=timezone.now())
    _publish_state(Tokenizer.objects.get(id=tokenizer_id))


def _publish_state(row: Tokenizer) -> None:
    publish(realtime.tokenizer_group(row.id), realtime.training_state_event(selectors.tokenizer_view(row)))
