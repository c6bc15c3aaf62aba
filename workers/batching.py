"""Continuous batching in the infer worker: every generation of one loaded model shares one forward per step.

    steps = scheduler_for(model).submit(context, max_new_tokens=16, temperature=0, ...)   # generate()'s arguments
    for g in steps: ...        # GeneratedTokens, exactly as generate() yields them
    steps.close()              # leave early (stop pressed, stop string, time limit): the row goes at the next step

Why: the infer worker used to run each generation in its own thread, each a forward per token over one row. On a
CPU a decode step is bound by reading the weights, so twenty requests paid twenty weight reads per token each and
queued behind the pool's threads (issue 10: 11 s to the first token at the median with twenty people). Now one
scheduler thread per (worker process, loaded model) owns a workers.gpt.batch_generate.Batch: requests join it
between steps, finished and cancelled ones leave it, and each step reads the weights once for everyone.

What a caller can rely on:
- Its tokens are the ones it would get alone (greedy or seeded): rows never share attention or sampling state,
  each has its own KV cache and torch.Generator, and a batch of several is padded so that the matmul kernels do
  not depend on how many others are in it. Alone it is exactly generate(), bit for bit; in a batch its
  probabilities may differ from alone by ~1e-7 (another matmul kernel; batch_generate's docstring says why).
- The Celery task still owns its generation: it marks the row running, publishes the stream, checks the stop flag
  and the time limit, cuts at stop strings and records the result (workers/inference.py, unchanged in that), so
  the stream's events and the API are what they were. It only hands the decoding to the scheduler and relays.
- Leaving is cheap and prompt: close() (or dropping the iterator) takes the row out before the next step, which
  frees its KV cache; the others do not notice.
- A failing step (out of memory, a bug) fails the requests in it with the error, and the scheduler carries on
  with an empty batch for the next ones.
- An idle scheduler's thread ends after IDLE_SECONDS, so an evicted model is not kept alive by it; the next request
  starts a new one.

Torch threads: a step with work to share (several rows, or a prompt's chunk) runs on INFERENCE_TORCH_THREADS, every
core by default; a step that decodes one token for one row alone runs on SOLO_THREADS (one). Such a step is a chain
of ~200 matrix-vector products, each too short to split well: the OpenMP team must meet at a barrier after every
one of them, and on a small machine its second thread competes for a core with the rest of the path (this
process's relay threads and other threads' OpenMP teams, the web server, Redis, the browser); a preempted member
stalls the whole product. On two cores, with every core per step, a lone SmolLM2 stream ran at 0.61x the bare
loop; before continuous batching, when the worker gave a generation one thread, at 1.01x.
tests/benchmarks/test_generation_speed.py compares against a bare loop on the same threads.
The scheduler thread sets its count whenever the kind of step changes; under OpenMP and MKL that count is the
calling thread's (what torch.get_num_threads() reports is not: it is the last value set by any thread), so the
worker's other threads keep theirs.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref

log = logging.getLogger(__name__)

IDLE_SECONDS = 30.0  # an idle scheduler's thread ends after this long without requests
SOLO_THREADS = 1  # torch threads for a step that decodes one token of one row (the module's docstring says why)

_END = object()  # in a TokenStream's queue: no more tokens


class TokenStream:
    """One request's tokens as they come out of the batch: iterate it like generate(); close() to leave early."""

    def __init__(self, scheduler: Scheduler, settings: dict):
        self.scheduler = scheduler
        self.settings = settings
        self.tokens: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.closed:
            raise StopIteration
        item = self.tokens.get()
        if item is _END:
            self.closed = True
            raise StopIteration
        if isinstance(item, BaseException):
            self.closed = True
            raise item
        return item

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.scheduler.inbox.put(("leave", self))

    def __del__(self):
        self.close()


class Scheduler:
    """Owns the Batch of one loaded model and the thread that steps it."""

    def __init__(self, model, *, idle_seconds: float = IDLE_SECONDS, threads: int | None = None):
        from django.conf import settings

        from workers.gpt.batch_generate import Batch

        self.batch = Batch(model)
        self.idle_seconds = idle_seconds
        self.threads = threads or settings.INFERENCE_TORCH_THREADS  # for steps with work to share
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.thread_count: int | None = None  # the scheduler thread's torch threads, as _step last set them
        self.steps = 0  # forwards run so far (for tests and logs)
        self.largest = 0  # the most rows one step has served

    def submit(self, idx_list, **settings) -> TokenStream:
        """Join the batch with generate()'s arguments (max_new_tokens, temperature, top_k, top_p, min_p,
        repetition_penalty, seed, stop_ids, n_alternatives); returns the request's TokenStream at once."""
        stream = TokenStream(self, {"idx_list": idx_list, **settings})
        with self.lock:
            self.inbox.put(("join", stream))
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="batching", daemon=True)
                self.thread.start()
        return stream

    def _run(self) -> None:
        self.thread_count = None  # what this thread's torch threads were last set to (by _step)
        while True:
            if not self.batch.rows:
                try:
                    message = self.inbox.get(timeout=self.idle_seconds)
                except queue.Empty:
                    with self.lock:  # submit() holds the lock while it queues, so nothing slips in between
                        if self.inbox.empty():
                            self.thread = None
                            return
                    continue
                self._handle(message)
            while True:  # everything that arrived since the last step joins (or leaves) before the next one
                try:
                    self._handle(self.inbox.get_nowait())
                except queue.Empty:
                    break
            if self.batch.rows:
                self._step()

    def _handle(self, message) -> None:
        kind, stream = message
        if kind == "leave":
            row = getattr(stream, "row", None)
            if row is not None:
                self.batch.remove(row)
            return
        if stream.closed:  # it left before it joined
            return
        settings = dict(stream.settings)
        try:
            stream.row = self.batch.add(settings.pop("idx_list"), tag=weakref.ref(stream), **settings)
        except Exception as e:  # bad arguments: that request fails, with generate()'s message
            stream.tokens.put(e)
            return
        if stream.row.done:
            stream.tokens.put(_END)

    def step_threads(self, rows) -> int:
        """Torch threads for the next step over rows: SOLO_THREADS to decode one row's next token, else all."""
        return SOLO_THREADS if len(rows) == 1 and len(rows[0].pending) == 1 else self.threads

    def _step(self) -> None:
        import torch

        rows = list(self.batch.rows)
        self.largest = max(self.largest, len(rows))
        if self.thread_count != (threads := self.step_threads(rows)):
            torch.set_num_threads(threads)  # this thread's OpenMP and MKL count (the others keep theirs)
            self.thread_count = threads
        try:
            out = self.batch.step()
        except Exception as e:
            log.exception("a batched step over %d generations failed", len(rows))
            for row in rows:
                self.batch.remove(row)
                if (stream := row.tag()) is not None:
                    stream.tokens.put(e)
            return
        self.steps += 1
        for row, token in out:
            stream = row.tag()
            if stream is None:  # its reader is gone without closing: nobody waits for these tokens
                self.batch.remove(row)
                continue
            stream.tokens.put(token)
            if row.done:
                stream.tokens.put(_END)


_schedulers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id(model) -> its Scheduler
_lock = threading.Lock()


def scheduler_for(model) -> Scheduler:
    """The scheduler of this loaded model in this process (made on first use). Held weakly: once its thread has
    ended and no stream uses it, it goes, and with it its reference to the model."""
    with _lock:
        scheduler = _schedulers.get(id(model))
        if scheduler is None or scheduler.batch.model is not model:
            scheduler = _schedulers[id(model)] = Scheduler(model)
        return scheduler
