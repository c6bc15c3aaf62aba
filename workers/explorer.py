"""Glue for the explorer: a Trace row in, a trace file out (workers/gpt/trace.py does the looking).

    trace_compute(trace_id=7)   # what the Celery task `trace_compute` calls on an infer worker

Loads the model through the infer worker's warm cache (workers/model_cache.py, asked with a LoadSpec: a SmolLM2
load takes seconds, a trace of it a fraction of one), tokenizes the text, truncates it to what the explorer shows
for this model (and says so), runs one forward pass, writes the packed trace atomically under ARTIFACTS_DIR and reports to the row, which tells the page.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from apps.explorer import selectors, services
from apps.explorer.models import Trace
from workers.gpt.fileio import atomic_write_bytes
from workers.model_cache import LoadSpec, model_cache

log = logging.getLogger(__name__)


def trace_compute(*, trace_id: int) -> str:
    """Compute one trace; returns its final status. Every failure is recorded on the row in words for the user."""
    trace = services.trace_start(trace_id=trace_id, worker=_worker_name())
    if trace is None:
        return "skipped"
    try:
        source = selectors.source_resolve(ref=trace.source)
        loaded, warm = load(source)
        load_ms = 0.0 if warm else loaded.load_ms
        services.trace_phase(trace=trace, phase="running the model")
        blob, info = compute(loaded, source=source, text=trace.text)
        atomic_write_bytes(trace.file, blob)
    except selectors.ExplorerError as exc:
        services.trace_fail(trace_id=trace_id, error=str(exc))
        return Trace.Status.FAILED
    except Exception as exc:  # the page must show why, not spin forever
        log.exception("trace %s failed", trace_id)
        services.trace_fail(trace_id=trace_id, error=f"The worker could not trace this text: {type(exc).__name__}: {exc}")
        return Trace.Status.FAILED
    services.trace_finish(trace=trace, size_bytes=len(blob), load_ms=load_ms, **info)
    return Trace.Status.READY


def compute(loaded, *, source: selectors.Source, text: str) -> tuple[bytes, dict]:
    """Tokenize, truncate, trace and pack: (blob, what the row records). Writes nothing itself."""
    import torch

    from workers.gpt import tokenizers as toklib
    from workers.gpt.config import param_count
    from workers.gpt.trace import pack, trace_forward

    started = time.perf_counter()
    tok, model = loaded.tokenizer, loaded.model
    notes = []
    try:
        ids = tok.encode(text)
    except toklib.TokenizerError:
        # a character-level tokenizer knows only its corpus's characters: trace the rest, and say what was left out
        known = getattr(tok, "stoi", {})
        dropped = sorted({c for c in text if c not in known})
        text = "".join(c for c in text if c in known)
        shown = " ".join(repr(c) for c in dropped[:8]) + (" …" if len(dropped) > 8 else "")
        notes.append(f"Left out {len(dropped)} character(s) this model's tokenizer never saw: {shown}.")
        ids = tok.encode(text)
        if not ids:
            raise selectors.ExplorerError("None of the text's characters are in this model's vocabulary: type "
                                          "text in the language and script it was trained on.")
    limit = selectors.token_limit(source.config)
    text_tokens = len(ids)
    if text_tokens > limit:
        ids = ids[:limit]
        why = "its block_size" if limit == source.config["block_size"] else "what the explorer shows for its size"
        notes.append(f"The text is {text_tokens} tokens long; traced the first {limit}, {why} for this model.")
    special = {i: s for s, i in getattr(tok, "special_tokens", {}).items()}
    with torch.inference_mode():
        result = trace_forward(model, ids, token_bytes=tok.token_bytes, special=special)
    cfg = model.config
    meta = {
        "source": source.ref,
        "label": source.label,
        "kind": source.kind,
        "run_id": source.run_id,
        "step": source.step,
        "tokenizer": getattr(tok, "name", ""),
        "config": {**cfg.to_dict(), "head_size": cfg.head_size},
        "n_params": param_count(cfg),
        "text_tokens": text_tokens,
        "notes": notes,
    }
    blob = pack(result, meta)
    return blob, {"n_tokens": len(ids), "text_tokens": text_tokens, "notes": notes,
                  "compute_ms": (time.perf_counter() - started) * 1000}


# ---------------------------------------------------------------------------------------------------------------------
# models, kept warm


def load(source: selectors.Source):
    """The model and tokenizer of a source, through the infer worker's warm model cache (workers/model_cache.py),
    which generation shares: SmolLM2 loaded for one is warm for the other, and one memory budget bounds both.
    Returns (loaded, warm); loaded has .model and .tokenizer."""
    return model_cache.get(load_spec(source))


def load_spec(source: selectors.Source) -> LoadSpec:
    """What to load for a source: a registry model's weights by sha256 (the key generation uses too), a checkpoint's
    by the version its source carries (size and mtime)."""
    tokenizer = source.extra.get("tokenizer")
    if not tokenizer:
        raise selectors.ExplorerError("This model's tokenizer was deleted, so text cannot be encoded for it: pick "
                                      "another model.")
    version = source.extra["sha256"] if source.kind == "model" else source.version
    return LoadSpec(path=source.extra["path"], version=version, tokenizer=tokenizer, label=source.label)


# ---------------------------------------------------------------------------------------------------------------------


def _worker_name() -> str:
    return os.environ.get("CELERY_WORKER_NAME") or f"pid {os.getpid()}@{socket.gethostname()}"
