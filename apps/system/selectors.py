import json
import time

from django.conf import settings
from django.db import connection
from django.urls import reverse

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


def journey_progress(*, user) -> dict[str, dict]:
    """What the signed-in person has made at each step of the journey, newest first, read from each app's own
    selectors: {step key: {"label", "url", "state"}}; a step they have not reached is absent. Anonymous: {}."""
    if user is None or not user.is_authenticated:
        return {}
    # Imported here: apps.system is the layer every app imports, so it reaches up into them only when asked.
    from apps.corpora.selectors import corpus_list
    from apps.registry.selectors import model_list
    from apps.tokenization.selectors import tokenizer_list
    from apps.training.selectors import run_list

    progress = {}
    if corpus := corpus_list(user=user).filter(owner=user).order_by("-created", "-id").first():
        progress["data"] = {"label": corpus.name, "url": reverse("corpora:detail", args=[corpus.id]), "state": ""}
    if tokenizer := tokenizer_list(user=user).filter(owner=user).order_by("-id").first():
        progress["tokenizers"] = {"label": tokenizer.name, "url": reverse("tokenization:detail", args=[tokenizer.name]),
                                  "state": tokenizer.get_status_display()}
    if run := run_list(user=user).filter(owner=user).order_by("-created", "-id").first():
        progress["training"] = {"label": run.name, "url": reverse("training:run", args=[run.id]),
                                "state": run.get_status_display()}
    if model := model_list(user=user).filter(owner=user).exclude(status="archived").order_by("-created", "-id").first():
        progress["generate"] = {"label": model.name, "url": reverse("inference:generate") + f"?model={model.slug}",
                                "state": model.get_status_display()}
    return progress
