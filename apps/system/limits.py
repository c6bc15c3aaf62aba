"""Rate limits for every app: one sliding-window limiter in Redis (shared by every web process) and one way to name
the client it counts.

The window slides: a request is allowed when fewer than `limit` requests of the same scope and client were allowed
in the `window_seconds` before it. Each allowed request is a member of a sorted set scored by its time; one Lua
script drops the members older than the window, counts the rest and adds the new one, atomically. A fixed window
(a counter per clock minute) lets up to twice the limit through around a minute's edge; this one never lets more
than `limit` through in any window-long stretch. Refused requests are not counted, so a client that keeps knocking
gets in again as soon as its oldest request leaves the window, and Retry-After says exactly when that is.

Failure policy: CLOSED, for every scope. When Redis does not answer within REDIS_TIMEOUT_SECONDS the request is
refused with status 503 and a short Retry-After, never let through unmetered and never left to hang or become a 500.
Why one policy and why closed: what we limit is anonymous use of work that costs the server (generation, traces,
tokenizing up to TOKENIZE_MAX_BYTES per keystroke); a limiter that opens when Redis stalls removes the protection at
the moment the service is weakest, and generation and traces cannot run without Redis anyway (it is their queue).
Signed-in users of the playground are not limited, so they are not affected at all. Callers decide who is limited;
this module only counts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time

from apps.system.redisconn import redis_client

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.5  # connect and read: a stalled Redis costs a request half a second, then a 503
UNAVAILABLE_RETRY_SECONDS = 5

# KEYS[1] the client's sorted set; ARGV: now, window (s), limit, a unique member. Returns -1 when the request is
# allowed (and recorded), else the seconds until the oldest recorded request leaves the window, as a string (Lua
# numbers become integers on the way out).
_SLIDING_WINDOW = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  return -1
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""


class RateLimited(Exception):
    """A request refused by rate_limit: status 429 (over the limit) or 503 (the limiter cannot count right now), and
    the whole seconds after which trying again makes sense (send it as Retry-After)."""

    def __init__(self, message: str, *, status: int, retry_after: int):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _now() -> float:
    return time.time()


def rate_limit(*, scope: str, who: str, limit: int, message: str, window_seconds: int = 60) -> None:
    """Count one request of `who` (a client_address, or "user:<pk>") against `limit` per `window_seconds` in `scope`
    ("inference.generate", "explorer.trace", ...). Returns when it may proceed; raises RateLimited otherwise.
    `message` is the refusal the user reads; "{retry_after}" in it becomes the seconds to wait."""
    key = f"lab:limit:{scope}:{hashlib.sha256(who.encode()).hexdigest()[:16]}"
    now = _now()
    try:
        script = redis_client(timeout=REDIS_TIMEOUT_SECONDS).register_script(_SLIDING_WINDOW)
        wait = float(script(keys=[key], args=[repr(now), window_seconds, limit, f"{now!r}:{secrets.token_hex(4)}"]))
    except Exception:
        log.warning("rate limiter for %s cannot reach Redis; refusing the request", scope, exc_info=True)
        raise RateLimited(f"The server cannot check its rate limit right now (its Redis is not answering): try again "
                          f"in {UNAVAILABLE_RETRY_SECONDS} s.", status=503,
                          retry_after=UNAVAILABLE_RETRY_SECONDS) from None
    if wait >= 0:
        retry_after = max(1, math.ceil(wait))
        raise RateLimited(message.format(retry_after=retry_after), status=429, retry_after=retry_after)


def client_address(request_or_scope) -> str:
    """Who a rate limit counts when nobody is signed in: the peer address of an HTTP request (request.META) or of a
    websocket (an ASGI scope's "client"). A proxy in front should set REMOTE_ADDR for us (not X-Forwarded-For, which
    any client can write)."""
    meta = getattr(request_or_scope, "META", None)
    if meta is not None:
        return meta.get("REMOTE_ADDR") or "unknown"
    client = request_or_scope.get("client") or ["unknown"]
    return str(client[0])
