"""The corpora socket's vocabulary: group names and event types. Spelled here and nowhere else;
apps.system.realtime.publish sends them.

A corpus page listens to its corpus's group; every shards job of that corpus publishes its whole state there (small,
idempotent: a dropped event is repaired by the next, and a job always ends with a final state event)."""

SHARDS_PROGRESS = "corpora.shards_progress"  # a running job's state: progress, rate, ETA (every ~0.3 s at most)
SHARDS_STATE = "corpora.shards_state"  # a job changed status (queued, running, succeeded, failed, cancelled)


def corpus_group(corpus_id: int) -> str:
    return f"corpora.corpus.{corpus_id}"


def shards_progress_event(shards: dict) -> dict:
    return {"type": SHARDS_PROGRESS, "shards": shards}


def shards_state_event(shards: dict) -> dict:
    return {"type": SHARDS_STATE, "shards": shards}
