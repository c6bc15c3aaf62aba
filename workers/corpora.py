"""Glue for encoding a corpus into token shards: rows in, token files out, progress published.

The text is cut at "safe" line starts (apps.corpora.text.SAFE_CUT) into chunks of about CHUNK_CHARS, and tiktoken
encodes them on ENCODE_THREADS threads (it releases the GIL); the ids are exactly those of encoding the whole text at
once (tests check it). Files are written with workers.gpt.data.TokenWriter into a hidden folder
that is renamed into place only when both train and val are complete: a cancel or an error leaves nothing behind.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from workers.gpt import tokenizers as toklib

log = logging.getLogger(__name__)

CHUNK_CHARS = 128 * 1024
ENCODE_THREADS = 2
AHEAD = 4  # chunks in flight per thread: progress reports never leave the threads idle
PROGRESS_EVERY = 0.5  # seconds between progress reports


class EncodingCancelled(Exception):
    pass


def chunks(text: str, start: int, end: int, size: int | None = None) -> list[tuple[int, int]]:
    """(begin, end) spans covering text[start:end], cut at safe points about `size` (default CHUNK_CHARS) apart."""
    from apps.corpora.text import safe_spans

    return safe_spans(text, start, end, CHUNK_CHARS if size is None else size)


def encode_span(tok: toklib.Tokenizer, text: str, start: int, end: int, write: Callable[[object], None],
                on_batch: Callable[[int, int], None]) -> int:
    """Encode text[start:end] (as ordinary text: special-token strings are plain text) and pass the ids to write, in
    order; on_batch(chars, tokens) after each chunk. Returns the number of tokens.

    tiktoken encodes chunks on ENCODE_THREADS threads (it releases the GIL), a few chunks ahead of the writer, so
    the threads stay busy while this thread writes and reports (no stragglers waiting at batch boundaries)."""
    spans = chunks(text, start, end)
    total = 0
    if not isinstance(tok, toklib.TiktokenTokenizer):
        for a, b in spans:
            ids = encode_chars(tok, text[a:b])
            write(ids)
            total += len(ids)
            on_batch(b - a, len(ids))
        return total
    encode = tok.encoding.encode_ordinary
    with ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="encode") as pool:
        queue = iter(spans)
        in_flight = deque((span, pool.submit(encode, text[span[0]:span[1]]))
                          for span in itertools.islice(queue, ENCODE_THREADS * AHEAD))
        try:
            while in_flight:
                (a, b), future = in_flight.popleft()
                ids = future.result()
                if (span := next(queue, None)) is not None:
                    in_flight.append((span, pool.submit(encode, text[span[0]:span[1]])))
                write(ids)
                total += len(ids)
                on_batch(b - a, len(ids))
        finally:
            for _, future in in_flight:  # stopping (cancel, error): do not encode what nobody will write
                future.cancel()
    return total


def encode_chars(tok: toklib.CharTokenizer, text: str) -> np.ndarray:
    """A character tokenizer, vectorized: code points -> ids through a sorted table."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.array(sorted(ord(c) for c in tok.chars), dtype=np.uint32)
    ids_by_rank = np.array([tok.stoi[chr(c)] for c in table], dtype=np.int64)
    pos = np.searchsorted(table, codes)
    pos_clipped = np.minimum(pos, len(table) - 1)
    bad = table[pos_clipped] != codes
    if bad.any():
        tok.encode(text)  # raises TokenizerError naming the missing characters
    return ids_by_rank[pos_clipped]


def corpus_encode(*, shards_id: int) -> str:
    """Encode the shards row's corpus with its tokenizer. Returns the final status."""
    from django.conf import settings

    from apps.corpora import services
    from apps.system import files
    from apps.tokenization.selectors import tokenizer_runtime
    from workers.gpt.data import TokenWriter, dtype_for_vocab

    shards = services.shards_mark_running(shards_id=shards_id)
    if shards is None:
        return "skipped"
    started = time.monotonic()
    deadline = started + settings.CORPUS_ENCODE_MAX_SECONDS
    work = None
    try:
        corpus = shards.corpus
        text = corpus.file.read_text(encoding="utf-8")
        tok = tokenizer_runtime(tokenizer=shards.tokenizer)
        dtype = dtype_for_vocab(tok.n_vocab)
        split = corpus.split.get("char", len(text))
        total_chars = len(text)
        state = {"chars": 0, "tokens": 0, "reported": 0.0}

        def on_batch(chars: int, tokens: int) -> None:
            state["chars"] += chars
            state["tokens"] += tokens
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"encoding took longer than CORPUS_ENCODE_MAX_SECONDS "
                                   f"({settings.CORPUS_ENCODE_MAX_SECONDS:.0f} s)")
            if now - state["reported"] >= PROGRESS_EVERY or state["chars"] >= total_chars:
                state["reported"] = now
                stop = services.shards_record_progress(shards_id=shards_id, done_chars=state["chars"],
                                                       total_chars=total_chars, tokens=state["tokens"],
                                                       elapsed=now - started)
                if stop:
                    raise EncodingCancelled()

        final = services.shards_dir(shards.cache_key)
        work = files.temp_dir(final.parent, shards.cache_key[:16])
        counts = {}
        for part, (a, b) in (("train", (0, split)), ("val", (split, total_chars))):
            with TokenWriter(work / f"{part}.tokens", dtype) as writer:
                counts[part] = encode_span(tok, text, a, b, writer.write, on_batch)
        meta = {"corpus": corpus.name, "corpus_sha256": corpus.sha256, "tokenizer": tok.name,
                "n_vocab": tok.n_vocab, "dtype": dtype.name, "split_char": split,
                "n_train_tokens": counts["train"], "n_val_tokens": counts["val"], "format": "workers.gpt.data v1"}
        (work / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        if final.exists():  # the same text was encoded meanwhile by another row: keep that one
            files.remove(work)
        else:
            os.replace(work, final)
        work = None
        services.shards_mark_succeeded(shards_id=shards_id, dtype=dtype.name, n_train_tokens=counts["train"],
                                       n_val_tokens=counts["val"], elapsed=time.monotonic() - started)
        return "succeeded"
    except EncodingCancelled:
        services.shards_mark_cancelled(shards_id=shards_id)
        return "cancelled"
    except Exception as exc:
        log.exception("encoding shards %s failed", shards_id)
        services.shards_mark_failed(shards_id=shards_id, error=_reason(exc))
        return "failed"
    finally:
        if work is not None:
            files.remove(Path(work))


def _reason(exc: Exception) -> str:
    if isinstance(exc, (toklib.TokenizerError, TimeoutError, ValueError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
