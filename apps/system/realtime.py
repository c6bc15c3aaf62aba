"""The System socket's vocabulary (group names, event types), and `publish`: the one way to send an event to a
group from sync code, used by every app's realtime.py callers, services and worker threads.

One policy for every sender: a dropped event is logged and forgotten, never raised into a request, an on_commit
callback or a training step. Events are small and idempotent and the database holds the truth, so the next event
(or a page reload) repairs what one lost event left out, while an exception would fail work that already succeeded.

channels-redis keeps its Redis connections per event loop, so where the event goes decides how it is sent:
- plain sync code (a view, a Celery task, a worker thread): this thread's own loop, made once and kept for the
  thread's life, so a thread that publishes every few milliseconds reuses one connection;
- sync code that async code called through `sync_to_async` (a consumer's database call): back on that event loop,
  as asgiref's async_to_sync does;
- a coroutine that calls it directly: scheduled as a task on the running loop, never blocking it.
A thread that ends (a run's recorder) calls `publish_thread_close()` so its loop's connections go with it.
"""

import asyncio
import logging
import threading

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

HEARTBEAT = "system.heartbeat"  # a worker's full status; sent every WORKER_HEARTBEAT_SECONDS and on task start/end
WORKER_GONE = "system.worker_gone"  # a worker shut down cleanly (a killed one just stops beating)


def workers_group() -> str:
    return "system.workers"


def worker_key(name: str) -> str:
    """Redis key holding a worker's last heartbeat, so a page opened later can be rebuilt without waiting."""
    return f"lab:system:worker:{name}"


def heartbeat_event(status: dict) -> dict:
    return {"type": HEARTBEAT, "worker": status}


def worker_gone_event(name: str) -> dict:
    return {"type": WORKER_GONE, "name": name}


# ----------------------------------------------------------------------------------------------------------------------
# publishing

_local = threading.local()
_tasks: set[asyncio.Task] = set()  # sends scheduled from coroutines, held until done (the loop keeps weak refs only)


def publish(group: str, event: dict) -> None:
    """Send `event` to `group`; a failure is logged, never raised (see the module's docstring)."""
    try:
        layer = get_channel_layer()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:  # a coroutine called us: send in the background, the caller's loop keeps running
            task = running.create_task(layer.group_send(group, event))
            _tasks.add(task)
            task.add_done_callback(lambda t: _sent(t, group, event))
        elif getattr(SyncToAsync.threadlocal, "main_event_loop", None) is not None:  # inside sync_to_async
            async_to_sync(layer.group_send)(group, event)
        else:
            _thread_loop().run_until_complete(layer.group_send(group, event))
    except Exception:
        _dropped(group, event)


def publish_thread_close() -> None:
    """Close this thread's publishing loop (and with it the Redis connections channels-redis opened on it)."""
    loop = getattr(_local, "loop", None)
    _local.loop = None
    if loop is not None and not loop.is_closed():
        loop.close()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _sent(task: asyncio.Task, group: str, event: dict) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        _dropped(group, event, exc_info=task.exception())


def _dropped(group: str, event: dict, exc_info=True) -> None:
    log.warning("event %s to %s not delivered", event.get("type"), group, exc_info=exc_info)
