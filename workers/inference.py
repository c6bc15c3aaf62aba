"""Glue for generation on an infer worker: a Generation row in, tokens streamed to its group, the row completed.

    completion_stream(generation_id=7, worker="infer@host")   # what the Celery task `completion_stream` calls

The decoding is workers/batching.py: the generation joins its model's running batch (continuous batching, one
forward per step for every generation of that model) and this module relays its tokens and decides where they go.
It batches them (the first at once, then every ~100 ms or 32 tokens), checks the stop flag between batches, cuts
the text at stop strings, and always ends with a final state event sent after the row holds the result. Models stay
loaded in workers/model_cache.py's process-wide cache (bounded by memory), so a second request does not
reload.
"""

from __future__ import annotations

import codecs
import logging
import secrets
import time

from django.conf import settings

from apps.inference import realtime, services
from apps.inference.models import Generation
from apps.system.realtime import publish
from workers.model_cache import model_cache, model_spec

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1  # a batch of tokens goes out at least this often...
FLUSH_TOKENS = 32  # ...or when it holds this many
STOP_CHECK_SECONDS = 0.05  # the stop flag is read at most this often (and at every flush)


# ----------------------------------------------------------------------------------------------------------------------
# the stream


class Stream:
    """One generation's bookkeeping: records, text, batches, stop strings, stats."""

    def __init__(self, gen: Generation, tokenizer, prefix: list[dict], pieces: dict | None = None):
        self.gen, self.tok = gen, tokenizer
        self.pieces = pieces if pieces is not None else {}
        self.group = realtime.completion_group(gen.pk)
        self.uid = str(gen.uid)
        self.records: list[dict] = [dict(r) for r in prefix]
        self.text = "".join(r.get("t", "") for r in prefix if not r.get("eos"))
        self.stops = list(gen.params.get("stop") or [])
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.specials = {i: s for s, i in tokenizer.special_tokens.items()}
        self.pending: list[dict] = []
        self.sent = 0  # records published so far
        self.last_flush = 0.0
        self.last_stop_check = 0.0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.cut: int | None = None  # where a stop string begins in self.text

    def piece(self, token_id: int) -> str:
        """A token shown on its own: its text, or its bytes escaped when they are not whole UTF-8 characters."""
        piece = self.pieces.get(token_id)
        if piece is None:
            if token_id in self.specials:
                piece = self.specials[token_id]
            else:
                piece = self.tok.token_bytes(token_id).decode("utf-8", errors="backslashreplace")
            self.pieces[token_id] = piece
        return piece

    def add(self, g, *, eos: bool) -> dict:
        if eos:
            delta = ""
        elif g.id in self.specials:
            delta = self.decoder.decode(b"", final=True) + self.specials[g.id]
            self.decoder.reset()
        else:
            delta = self.decoder.decode(self.tok.token_bytes(g.id))
        rec = {"i": len(self.records), "id": g.id, "t": delta if not eos else self.specials.get(g.id, ""),
               "p": round(g.prob, 6), "rp": round(g.raw_prob, 7),
               "alt": [[i, self.piece(i), round(p, 6)] for i, p in g.alternatives],
               "ralt": [[i, self.piece(i), round(p, 7)] for i, p in g.raw_alternatives]}
        if eos:
            rec["eos"] = True
        elif not delta:
            rec["b"] = self.piece(g.id)  # part of a character that the next token completes
        self.records.append(rec)
        self.pending.append(rec)
        now = time.perf_counter()
        self.first_token_at = self.first_token_at or now
        self.last_token_at = now
        if not eos:
            before = len(self.text)
            self.text += delta
            self.cut = self._find_stop(before)
        return rec

    def _find_stop(self, before: int) -> int | None:
        for s in self.stops:
            at = self.text.find(s, max(0, before - len(s) + 1))
            if at >= 0:
                return at
        return None

    def due(self) -> bool:
        return (self.sent == 0 or len(self.pending) >= FLUSH_TOKENS
                or time.perf_counter() - self.last_flush >= FLUSH_SECONDS)

    def flush(self) -> None:
        if not self.pending:
            return
        publish(self.group, realtime.tokens_event(self.uid, offset=self.pending[0]["i"], tokens=self.pending))
        self.sent += len(self.pending)
        self.pending = []
        self.last_flush = time.perf_counter()

    def stop_requested(self, force: bool = False) -> str | None:
        now = time.perf_counter()
        if not force and now - self.last_stop_check < STOP_CHECK_SECONDS:
            return None
        self.last_stop_check = now
        return services.generation_stop_requested(generation_id=self.gen.pk)


def _prompt_ids(gen: Generation, tok) -> list[int]:
    from workers.gpt.chat import render_chat

    if gen.mode == Generation.Mode.CHAT:
        specials = {i: s for s, i in tok.special_tokens.items()}
        bos_id, eos_id = getattr(tok, "bos_id", None), getattr(tok, "eos_id", None)
        text = render_chat(gen.model.chat_template, gen.messages, add_generation_prompt=True,
                           bos_token=specials.get(bos_id, ""), eos_token=specials.get(eos_id, ""))
    else:
        text = gen.prompt
    return tok.encode(text, allow_special=True)


def completion_stream(*, generation_id: int, worker: str) -> str:
    """Stream one generation; returns its final status. Every failure is recorded on the row and sent as the final
    event, in words for the user."""
    from workers.batching import scheduler_for

    gen = services.generation_mark_running(generation_id=generation_id, worker=worker)
    if gen is None:
        return "skipped"
    uid, group = str(gen.uid), realtime.completion_group(gen.pk)
    started = time.time()
    stats = {"queue_ms": round(max(0.0, started - gen.created.timestamp()) * 1000, 1)}
    params = gen.params
    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    # notes: what the user should know (shown as a warning); context_notes: ordinary facts about the run, shown
    # quietly (a reply that outgrows the context window is normal for a small model, not an error). Each is a code
    # and its numbers, worded in the reader's language by the page (static/js/inference/state.js noteText).
    stream, prompt_ids, cropped, notes, context_notes = None, [], False, [], []
    status, stop_reason, error = Generation.Status.DONE, Generation.StopReason.LENGTH, ""
    try:
        spec = model_spec(gen.model)
        if not model_cache.has(spec):
            publish(group, realtime.state_event(uid, status=realtime.LOADING, model=gen.model.name))
        loaded, warm = model_cache.get(spec)
        stats["load_ms"] = 0.0 if warm else round(loaded.load_ms, 1)
        model, tok = loaded.model, loaded.tokenizer
        prompt_ids = _prompt_ids(gen, tok)
        if not prompt_ids:
            raise services.InferenceError("the prompt has no tokens this model knows: type some text")
        stream = Stream(gen, tok, gen.prefix or [], loaded.pieces)
        block = model.config.block_size
        context = prompt_ids + [r["id"] for r in stream.records]
        cropped = len(context) > block
        if cropped:
            notes.append({"code": "cropped", "context": len(context), "model": gen.model.name, "block": block})
        publish(group, realtime.state_event(uid, status=realtime.RUNNING, prompt_tokens=len(prompt_ids),
                                            cropped=cropped, notes=notes, seed=seed, warm=warm))
        if stream.records:
            stream.pending = list(stream.records)  # a branch: the kept prefix and the alternative picked go first
            stream.flush()
        remaining = params["max_new_tokens"] - len(stream.records)
        deadline = time.perf_counter() + settings.INFERENCE_MAX_SECONDS
        stop_ids = set(gen.model.stop_ids or [])
        loop_started = time.perf_counter()
        if stream.records and stream.records[-1].get("eos"):
            remaining, stop_reason = 0, Generation.StopReason.EOS
        # the decoding happens in the model's shared batch (workers/batching.py); this thread relays its tokens
        steps = scheduler_for(model).submit(
            context, max_new_tokens=max(0, remaining), temperature=params["temperature"],
            top_k=params["top_k"] or None, top_p=params["top_p"], min_p=params["min_p"] or None,
            repetition_penalty=params["repetition_penalty"], seed=seed, stop_ids=stop_ids,
            n_alternatives=params.get("n_alternatives", 8))
        try:
            if reason := stream.stop_requested(force=True):
                raise _Stopped(reason)
            for g in steps:
                if g.cropped and not cropped:
                    cropped = True
                    context_notes.append({"code": "context_window", "model": gen.model.name, "block": block})
                stream.add(g, eos=g.stop)
                if g.stop:
                    stop_reason = Generation.StopReason.EOS
                    break
                if stream.cut is not None:
                    stop_reason = Generation.StopReason.STOP_STRING
                    break
                if stream.due():
                    stream.flush()
                    if reason := stream.stop_requested(force=True):
                        raise _Stopped(reason)
                elif reason := stream.stop_requested():
                    raise _Stopped(reason)
                if time.perf_counter() > deadline:
                    stop_reason = Generation.StopReason.TIMEOUT
                    notes.append({"code": "timeout", "seconds": round(settings.INFERENCE_MAX_SECONDS)})
                    break
        finally:
            steps.close()  # leaves the batch at the next step, which frees the KV cache
        stream.flush()
        stats.update(_speed(stream, loop_started, gen))
    except _Stopped as stopped:
        status = Generation.Status.STOPPED
        stop_reason = stopped.reason if stopped.reason in Generation.StopReason.values else Generation.StopReason.USER
        if stream is not None:
            stream.flush()
            stats.update(_speed(stream, loop_started, gen))
    except services.InferenceError as e:
        status, stop_reason, error = Generation.Status.FAILED, Generation.StopReason.ERROR, str(e)
    except Exception as e:
        from workers.gpt.chat import ChatTemplateError
        from workers.gpt.tokenizers import TokenizerError

        if not isinstance(e, (ChatTemplateError, TokenizerError)):
            log.exception("generation %s failed", generation_id)
        status, stop_reason = Generation.Status.FAILED, Generation.StopReason.ERROR
        error = str(e) if isinstance(e, (ChatTemplateError, TokenizerError)) else (
            f"The worker could not generate: {type(e).__name__}: {e}")
    records = stream.records if stream is not None else []
    text = stream.text if stream is not None else ""
    if stream is not None and stream.cut is not None:
        text = text[:stream.cut]
    services.generation_finish(generation_id=gen.pk, status=status, stop_reason=stop_reason, tokens=records,
                               text=text, prompt_tokens=len(prompt_ids) or None, cropped=cropped, seed=seed,
                               stats=stats, error=error)
    publish(group, realtime.state_event(uid, status=status, stop_reason=stop_reason, n_tokens=len(records),
                                        text=text, prompt_tokens=len(prompt_ids), cropped=cropped, notes=notes,
                                        context_notes=context_notes, stats=stats, error=error, seed=seed))
    return status


class _Stopped(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _speed(stream: Stream, loop_started: float, gen: Generation) -> dict:
    """Time to first token (from the request, as the user waits for it) and generation speed after it."""
    out = {}
    n = len(stream.records) - len(gen.prefix or [])
    if stream.first_token_at is not None:
        wall_start = gen.created.timestamp()
        first_wall = time.time() - (time.perf_counter() - stream.first_token_at)
        out["ttft_ms"] = round(max(0.0, first_wall - wall_start) * 1000, 1)
        out["prefill_ms"] = round((stream.first_token_at - loop_started) * 1000, 1)
    if n > 1 and stream.last_token_at > stream.first_token_at:
        out["tokens_per_s"] = round((n - 1) / (stream.last_token_at - stream.first_token_at), 2)
    out["generated"] = max(0, n)
    return out
