"""The inference socket's vocabulary: group names, event types, Redis keys. Spelled here and nowhere else.

A worker streams one generation to the generation's group. channels-redis drops messages to a slow listener rather
than blocking the worker, so every event is idempotent and self-placing: a batch of tokens carries the index of its
first token (`offset`), and the final state event carries the token count, so a listener that missed a batch knows
it and fetches the stored generation instead. Both web-page sockets and API requests listen to these groups.
"""

TOKENS = "inference.tokens"  # a batch of new tokens (every few tokens or ~100 ms), each with its probabilities
STATE = "inference.state"  # the generation changed state: loading the model, running, or finished (always sent last)

# the states a STATE event reports
LOADING = "loading"
RUNNING = "running"
FINISHED = ("done", "failed", "stopped")


def completion_group(generation_id: int) -> str:
    return f"inference.completion.{generation_id}"


def stop_key(generation_id: int) -> str:
    """Redis key that asks the worker streaming a generation to stop (set by the Stop button, a closed page, a
    disconnected API client); the worker checks it between batches."""
    return f"lab:inference:stop:{generation_id}"


def tokens_event(uid: str, *, offset: int, tokens: list[dict]) -> dict:
    return {"type": TOKENS, "generation": uid, "offset": offset, "tokens": tokens}


def state_event(uid: str, *, status: str, **fields) -> dict:
    return {"type": STATE, "generation": uid, "status": status, **fields}
