"""The explorer socket's vocabulary: group names and event types. Spelled here and nowhere else;
apps.system.realtime.publish sends them.

A page that asked for a trace listens to that trace's group until the trace is ready or failed. Events are small
and idempotent (the trace's whole state, never the trace itself: the page fetches the file over HTTP), and the
worker always ends with a final state event. A dropped event is repaired by the page's slow poll."""

STATUS = "explorer.status"  # a trace changed status: queued, running (with a phase), ready, failed


def trace_group(key: str) -> str:
    return f"explorer.trace.{key}"


def status_event(key: str, *, status: str, phase: str = "") -> dict:
    return {"type": STATUS, "key": key, "status": status, "phase": phase}
