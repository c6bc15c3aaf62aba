"""Rate limiting of anonymous use of the playground and the tokenize API: a fixed one-minute window per IP address,
counted in Redis (so every web process shares it). Signed-in users are not limited. If Redis cannot be reached the
request is let through: the limiter protects the service, it must not take it down."""

from __future__ import annotations

import logging
import time

from django.conf import settings

from apps.system.redisconn import redis_client

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def _now() -> float:
    return time.time()


def _key(scope: str, client: str, window: int) -> str:
    return f"lab:tokenization:ratelimit:{scope}:{client}:{window}"


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def rate_limit_check(*, request, scope: str = "tokenize") -> int | None:
    """Count this request; None if it may proceed, else the seconds until the window resets (for Retry-After)."""
    if request.user.is_authenticated:
        return None
    limit = settings.TOKENIZE_ANON_PER_MINUTE
    now = _now()
    window = int(now // WINDOW_SECONDS)
    key = _key(scope, client_address(request), window)
    try:
        pipe = redis_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS + 5)
        count, _ = pipe.execute()
    except Exception:
        log.warning("rate limiter unavailable; letting the request through", exc_info=True)
        return None
    if count > limit:
        return max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
    return None


def rate_limit_message(retry_after: int) -> str:
    return (f"Too many requests: visitors who are not signed in may make {settings.TOKENIZE_ANON_PER_MINUTE} a "
            f"minute. Try again in {retry_after} s, or sign in to lift the limit.")
