import json
import time

from django.conf import settings
from django.db import connection

from apps.system import realtime
from apps.system.redisconn import redis_client


def worker_view(status: dict, *, now: float | None = None) -> dict:
    """A worker's status plus what the page shows about it: heartbeat age and live/gone."""
    now = time.time() if now is None else now
    age = max(0.0, now - status["ts"])
    gone = status.get("stopped") or age > settings.WORKER_GONE_SECONDS
    return {**status, "age": age, "state": "gone" if gone else "live"}


def worker_statuses() -> dict[str, dict]:
    """Last heartbeat of every worker seen recently, by name (raw, as the workers sent them)."""
    client = redis_client()
    keys = sorted(client.scan_iter(match=realtime.worker_key("*")))
    statuses = {}
    for raw in client.mget(keys) if keys else []:
        if raw:
            status = json.loads(raw)
            statuses[status["name"]] = status
    return statuses


def worker_list(statuses: dict[str, dict] | None = None) -> list[dict]:
    statuses = worker_statuses() if statuses is None else statuses
    now = time.time()
    return sorted((worker_view(s, now=now) for s in statuses.values()), key=lambda w: (w["state"], w["name"]))


def health() -> dict:
    """Redis and database health as the page shows them; never raises."""
    result = {}
    started = time.perf_counter()
    try:
        info = redis_client().info("server")
        result["redis"] = {
            "ok": True,
            "ms": (time.perf_counter() - started) * 1000,
            "detail": f"Redis {info.get('redis_version', '?')}",
        }
    except Exception as exc:  # any failure is what the page must show, not raise
        result["redis"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        result["database"] = {
            "ok": True,
            "ms": (time.perf_counter() - started) * 1000,
            "detail": connection.display_name,
        }
    except Exception as exc:
        result["database"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    return result
