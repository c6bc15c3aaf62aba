"""Writes: asking for a trace (validated, cached, rate-limited, queued), and the worker's reports on it."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.explorer import realtime
from apps.explorer.models import Share, Trace
from apps.explorer.selectors import ExplorerError, source_get, trace_key
from apps.system import limits
from apps.system.realtime import publish


class RateLimited(ExplorerError):
    """Too many new traces (429), or the limiter cannot count them now (503)."""


def text_clean(*, text: str) -> str:
    """The text as it will be traced: newlines normalized; refused when empty or far too long."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ExplorerError(_("Type some text first: the explorer runs the model over your text, token by token."))
    limit = settings.EXPLORER_MAX_TEXT_CHARS
    if len(text) > limit:
        raise ExplorerError(_("That text has %(n)s characters; the explorer takes at most %(limit)s (and traces only "
                              "its first few hundred tokens): paste a shorter passage.")
                            % {"n": f"{len(text):,}", "limit": f"{limit:,}"})
    return text


SHARE_INLINE_CHARS = 500  # a text up to this long stays in the share link itself; a longer one is stored (Share)


def share_for(*, text: str) -> str:
    """The key a share link carries for `text` instead of the text ("" when the text is short enough for the URL)."""
    text = text_clean(text=text)
    if len(text) <= SHARE_INLINE_CHARS:
        return ""
    key = hmac.new(settings.SECRET_KEY.encode(), b"explorer-share:" + text.encode(), hashlib.sha256).hexdigest()[:32]
    Share.objects.get_or_create(key=key, defaults={"text": text})
    return key


def trace_request(*, ref: str, text: str, user, client: str) -> Trace:
    """The trace of `text` through the model `ref` names: the cached one when it exists or is being computed,
    else a new one queued for an infer worker (which counts against the client's rate limit)."""
    text = text_clean(text=text)
    source = source_get(ref=ref, user=user)
    key = trace_key(source=source, text=text)
    now = timezone.now()
    trace = Trace.objects.filter(key=key).first()
    if trace is not None:
        if trace.status == Trace.Status.READY and trace.file.exists():
            Trace.objects.filter(pk=trace.pk).update(used=now)
            return trace
        in_flight = trace.pending and trace.queued is not None
        if in_flight and (now - trace.queued).total_seconds() < settings.EXPLORER_TRACE_STALE_SECONDS:
            return trace
    rate_check(client=client, user=user)
    fields = dict(source=source.ref, source_label=source.label, text=text, status=Trace.Status.QUEUED, error="",
                  notes=[], queued=now, used=now, finished=None)
    if trace is None:
        try:
            with transaction.atomic():
                trace = Trace.objects.create(key=key, **fields)
        except IntegrityError:  # another request for the same text won the race: it queued the work
            return Trace.objects.get(key=key)
    else:  # failed before, lost with its worker, or its file was evicted: compute it again
        for name, value in fields.items():
            setattr(trace, name, value)
        trace.save()
    _enqueue(trace)
    return trace


def _enqueue(trace: Trace) -> None:
    from workers.tasks import trace_compute as trace_compute_task

    pk = trace.pk

    def send():
        result = trace_compute_task.delay(pk)
        Trace.objects.filter(pk=pk).update(task_id=result.id)

    transaction.on_commit(send)


def rate_check(*, client: str, user) -> None:
    """At most EXPLORER_TRACES_PER_MINUTE new traces per client and minute (twice that signed in); RateLimited (429,
    or 503 when the limiter cannot reach Redis: see apps.system.limits) otherwise."""
    limit = settings.EXPLORER_TRACES_PER_MINUTE * (2 if user is not None and user.is_authenticated else 1)
    who = f"user:{user.pk}" if user is not None and user.is_authenticated else client
    try:
        limits.rate_limit(scope="explorer.trace", who=who, limit=limit,
                          message=_("That is %(limit)s new traces this minute, the most the explorer computes for one "
                                    "visitor: try again in {retry_after} s (texts already traced still open at once).")
                          % {"limit": limit})
    except limits.RateLimited as e:
        raise RateLimited(str(e), status=e.status) from None


# ---------------------------------------------------------------------------------------------------------------------
# the worker's reports (workers/explorer.py)


def trace_start(*, trace_id: int, worker: str) -> Trace | None:
    """Mark a trace running; None when it is gone or already done (a task delivered twice)."""
    updated = Trace.objects.filter(pk=trace_id, status__in=Trace.PENDING).update(
        status=Trace.Status.RUNNING, worker=worker)
    if not updated:
        return None
    trace = Trace.objects.get(pk=trace_id)
    publish(realtime.trace_group(trace.key), realtime.status_event(trace.key, status=trace.status,
                                                                    phase="loading the model"))
    return trace


def trace_phase(*, trace: Trace, phase: str) -> None:
    """Tell a watching page what the worker is doing now (not stored: it lasts a fraction of a second)."""
    publish(realtime.trace_group(trace.key), realtime.status_event(trace.key, status=trace.status, phase=phase))


def trace_finish(*, trace: Trace, n_tokens: int, text_tokens: int, notes: list[str], size_bytes: int,
                 compute_ms: float, load_ms: float) -> None:
    Trace.objects.filter(pk=trace.pk).update(
        status=Trace.Status.READY, error="", n_tokens=n_tokens, text_tokens=text_tokens, notes=notes,
        size_bytes=size_bytes, compute_ms=compute_ms, load_ms=load_ms, finished=timezone.now())
    publish(realtime.trace_group(trace.key), realtime.status_event(trace.key, status=Trace.Status.READY))
    trace_cache_prune(max_bytes=settings.EXPLORER_CACHE_MAX_BYTES)


def trace_fail(*, trace_id: int, error: str) -> None:
    Trace.objects.filter(pk=trace_id).update(status=Trace.Status.FAILED, error=error, finished=timezone.now())
    trace = Trace.objects.filter(pk=trace_id).first()
    if trace is not None:
        publish(realtime.trace_group(trace.key), realtime.status_event(trace.key, status=trace.status))


def trace_cache_prune(*, max_bytes: int) -> int:
    """Delete the least recently used traces (file and row) until the rest take at most max_bytes; returns how
    many went. Pending traces are never touched."""
    ready = Trace.objects.filter(status=Trace.Status.READY).order_by("-used", "-id").values_list("pk", "key", "size_bytes")
    total, doomed = 0, []
    for pk, key, size in ready:
        total += size
        if total > max_bytes:
            doomed.append((pk, key))
    for pk, key in doomed:
        trace = Trace(pk=pk, key=key)
        trace.file.unlink(missing_ok=True)
    Trace.objects.filter(pk__in=[pk for pk, _ in doomed]).delete()
    return len(doomed)
