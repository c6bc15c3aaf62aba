"""The System socket's vocabulary: group names, event types and publish helpers. Spelled here and nowhere else."""

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
