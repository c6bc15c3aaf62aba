"""The corpora socket's vocabulary: group names, event types and publish helpers. Spelled here and nowhere else.

A corpus page listens to its corpus's group; every shards job of that corpus publishes its whole state there (small,
idempotent: a dropped event is repaired by the next, and a job always ends with a final state event)."""

import asyncio
import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

SHARDS_PROGRESS = "corpora.shards_progress"  # a running job's state: progress, rate, ETA (every ~0.3 s at most)
SHARDS_STATE = "corpora.shards_state"  # a job changed status (queued, running, succeeded, failed, cancelled)


def corpus_group(corpus_id: int) -> str:
    return f"corpora.corpus.{corpus_id}"


def shards_progress_event(shards: dict) -> dict:
    return {"type": SHARDS_PROGRESS, "shards": shards}


def shards_state_event(shards: dict) -> dict:
    return {"type": SHARDS_STATE, "shards": shards}


_local = threading.local()


def publish(group: str, event: dict) -> None:
    """Send an event to a group from sync code (views, services, worker threads). A Redis hiccup must not fail the
    job that publishes: the database holds the truth and the page rebuilds from it.

    A thread that is not serving an event loop keeps one of its own for its life (as workers/heartbeat.py does):
    channels-redis keeps its connections per loop, so a job reporting progress reuses one connection instead of
    opening a new loop and connection for every event."""
    layer = get_channel_layer()
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # plain sync code: use this thread's own loop
            loop = getattr(_local, "loop", None)
            if loop is None or loop.is_closed():
                loop = _local.loop = asyncio.new_event_loop()
            loop.run_until_complete(layer.group_send(group, event))
        else:  # called from async code through a sync wrapper: let asgiref find the way back to the loop
            async_to_sync(layer.group_send)(group, event)
    except Exception:
        log.warning("event %s to %s not delivered", event.get("type"), group, exc_info=True)
