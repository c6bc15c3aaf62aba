"""Glue for training a byte-level BPE tokenizer on a corpus: row in, tokenizer files out, progress published.

Training is pure Python and holds the GIL for its whole run, so it runs in a child process (spawned, so nothing of
the worker's threads or connections is inherited): the `infer` worker's other threads (generation, traces) keep
their share of the CPU, a cancel can always stop it, and the memory it used goes back when it ends. The child
writes bpe.tiktoken + bpe.json into a hidden folder; the parent checks that it loads and renames it into place.

This module imports no Django at import time: the spawned child imports it to find _train_child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

from workers.gpt import tokenizers as toklib

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.3  # seconds between progress reports (child -> parent -> database and socket)
STOP_GRACE = 5.0  # seconds a child gets to stop by itself before it is killed


def _train_child(conn, corpus_path: str, vocab_size: int, pattern: str, special_tokens: list[str], name: str,
                 out_dir: str) -> None:
    """In the child: train, save, report. Messages: ("phase", str), ("progress", done, total), ("done", n_merges),
    ("error", message), ("cancelled",). The parent sends "stop" to cancel."""
    try:
        conn.send(("phase", "reading the corpus"))
        text = Path(corpus_path).read_text(encoding="utf-8")
        conn.send(("phase", "counting pairs"))
        last = [0.0]

        def on_progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY / 2 or done == total:
                last[0] = now
                conn.send(("progress", done, total))

        def should_stop() -> bool:
            return conn.poll() and conn.recv() == "stop"

        tok = toklib.train_bpe(text, vocab_size, pattern, special_tokens, name=name, on_progress=on_progress,
                               should_stop=should_stop)
        wanted = vocab_size - 256 - len(special_tokens)
        if tok.n_merges < wanted:
            largest = 256 + tok.n_merges + len(special_tokens)
            conn.send(("error", f"the corpus supports only {tok.n_merges:,} merges with the {pattern} split pattern "
                                f"(every piece of text is a single token by then), not the {wanted:,} that a "
                                f"vocabulary of {vocab_size:,} needs: choose a vocabulary size of at most "
                                f"{largest:,}, or a larger corpus"))
            return
        conn.send(("phase", "saving"))
        toklib.save_bpe(tok, out_dir)
        conn.send(("done", tok.n_merges))
    except toklib.TokenizerTrainingCancelled:
        conn.send(("cancelled",))
    except toklib.TokenizerError as exc:
        conn.send(("error", str(exc)))
    except MemoryError:
        conn.send(("error", "the corpus is too large to train on in this worker's memory: use a smaller corpus"))
    except Exception as exc:  # report anything: the parent records it on the row
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def tokenizer_train(*, tokenizer_id: int) -> str:
    """Train the tokenizer row's BPE. Returns the final status."""
    from django.conf import settings

    from apps.system import files
    from apps.tokenization import services
    from apps.tokenization.fingerprint import fingerprint

    row = services.tokenizer_mark_running(tokenizer_id=tokenizer_id)
    if row is None:
        return "skipped"
    if row.corpus is None:
        services.tokenizer_mark_failed(tokenizer_id=tokenizer_id, error="its corpus was deleted before training began")
        return "failed"
    started = time.monotonic()
    parent = files.artifact_path("tokenizers")
    work = files.temp_dir(parent, f"bpe-{tokenizer_id}")
    final = parent / f"bpe-{row.name}"
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_train_child, name=f"bpe-train-{tokenizer_id}", daemon=True,
                        args=(theirs, str(row.corpus.file), row.vocab_size, row.pattern, list(row.special_tokens),
                              row.name, str(work)))
    outcome: tuple = ("error", "the training process ended without a result")
    try:
        child.start()
        theirs.close()
        phase, done, total = "starting", 0, max(1, row.vocab_size - 256 - len(row.special_tokens))
        reported = 0.0
        merging_since = None
        stop_reason = None  # "cancel" or "timeout"
        stop_sent_at = None
        deadline = started + settings.TOKENIZER_TRAIN_MAX_SECONDS
        while True:
            if ours.poll(0.1):
                try:
                    message = ours.recv()
                except EOFError:
                    break
                kind = message[0]
                if kind == "phase":
                    phase = message[1]
                elif kind == "progress":
                    done, total = message[1], message[2]
                    phase = "merging"
                    merging_since = merging_since or time.monotonic()
                else:
                    outcome = message
                    break
            elif not child.is_alive():
                break
            now = time.monotonic()
            if now - reported >= PROGRESS_EVERY:
                reported = now
                # the rate counts from the first merge: reading and counting pairs come before it
                if services.tokenizer_record_progress(tokenizer_id=tokenizer_id, done=done, total=total,
                                                      elapsed=now - (merging_since or now), phase=phase):
                    stop_reason = stop_reason or "cancel"
                if now > deadline:
                    stop_reason = stop_reason or "timeout"
                if stop_reason and stop_sent_at is None:
                    stop_sent_at = now
                    try:
                        ours.send("stop")
                    except (BrokenPipeError, OSError):
                        pass
                if stop_sent_at is not None and now - stop_sent_at > STOP_GRACE:
                    child.kill()  # busy counting pairs: it polls only between merges
                    break
        if stop_reason == "timeout" and outcome[0] != "done":
            outcome = ("error", f"training took longer than TOKENIZER_TRAIN_MAX_SECONDS "
                                f"({settings.TOKENIZER_TRAIN_MAX_SECONDS:.0f} s): choose a smaller vocabulary "
                                f"or corpus")
        elif stop_reason == "cancel" and outcome[0] != "done":
            outcome = ("cancelled",)
        child.join(STOP_GRACE)
        if child.is_alive():
            child.kill()
            child.join()
        if outcome[0] == "done":
            tok = toklib.load_bpe(work)  # what tiktoken will run: check it loads and matches its sha256
            files.remove(final)
            os.replace(work, final)
            services.tokenizer_mark_succeeded(tokenizer_id=tokenizer_id, path=files.artifact_relative(final),
                                              n_vocab=tok.n_vocab, n_merges=tok.n_merges,
                                              fingerprint=fingerprint(tok),
                                              train_seconds=time.monotonic() - started)
            return "succeeded"
        if outcome[0] == "cancelled":
            services.tokenizer_mark_cancelled(tokenizer_id=tokenizer_id)
            return "cancelled"
        if child.exitcode and child.exitcode < 0 and outcome == ("error", "the training process ended without a result"):
            outcome = ("error", f"the training process was killed (signal {-child.exitcode}); if it ran out of "
                                f"memory, use a smaller corpus")
        services.tokenizer_mark_failed(tokenizer_id=tokenizer_id, error=outcome[1])
        return "failed"
    except Exception as exc:
        log.exception("training tokenizer %s failed", tokenizer_id)
        services.tokenizer_mark_failed(tokenizer_id=tokenizer_id, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        ours.close()
        if work.exists():
            files.remove(work)
