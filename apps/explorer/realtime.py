"""The explorer socket's vocabulary: group names, event types and publish helpers. Spelled here and nowhere else.

A page that asked for a trace listens to that trace's group until the trace is ready or failed. Events are small
and idempotent (the trace's whole state, never the trace itself: the page fetches the file over HTTP), and the
worker always ends with a final state event. A dropped event is repaired by the page's slow poll."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

STATUS = "explorer.status"  # a trace changed status: queued, running (with a phase), ready, failed


def trace_group(key: str) -> str:
    return f"explorer.trace.{key}"


def status_event(key: str, *, status: str, phase: str = "") -> dict:
    return {"type": STATUS, "key": key, "status": status, "phase": phase}


def publish(group: str, event: dict) -> None:
    """Send an event to a group from sync code (services, worker threads). A Redis hiccup must not fail a trace:
    the database holds the truth and the page rebuilds from it."""
    try:
        async_to_sync(get_channel_layer().group_send)(group, event)
    except Exception:
        log.warning("event %s to %s not delivered", event.get("type"), group, exc_info=True)
