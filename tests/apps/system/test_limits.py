"""apps.system.limits: a sliding window that never lets more than the limit through in any window-long stretch, and
one failure policy (closed: a 503 with Retry-After) when Redis is unreachable or stalled."""

import json
import socket
import time

import pytest
from django.conf import settings
from django.test import RequestFactory, override_settings

from apps.system import limits
from apps.system.limits import RateLimited, client_address, rate_limit
from apps.system.redisconn import free_port, redis_reset

pytestmark = pytest.mark.usefixtures("redis_clean")


class Clock:
    def __init__(self, monkeypatch, start: float):
        self.now = start
        monkeypatch.setattr(limits, "_now", lambda: self.now)


def _allowed(who="10.0.0.1", limit=3) -> bool:
    try:
        rate_limit(scope="test", who=who, limit=limit, message="over, wait {retry_after} s")
        return True
    except RateLimited as e:
        assert e.status == 429
        return False


def test_it_allows_the_limit_then_refuses_with_the_seconds_to_wait(monkeypatch):
    clock = Clock(monkeypatch, 1_000_000_000.0)
    assert [_allowed() for _ in range(3)] == [True, True, True]
    clock.now += 20.2
    with pytest.raises(RateLimited) as refused:
        rate_limit(scope="test", who="10.0.0.1", limit=3, message="over, wait {retry_after} s")
    # the oldest request leaves the window 60 s after it was made: 39.8 s from now, rounded up
    assert refused.value.status == 429 and refused.value.retry_after == 40
    assert str(refused.value) == "over, wait 40 s"
    assert _allowed(who="10.0.0.2"), "another client has its own allowance"


def test_a_minute_boundary_no_longer_lets_twice_the_limit_through(monkeypatch):
    # a fixed window counted per clock minute allows 3 at :59 and 3 more at :00, six within two seconds
    minute = 1_000_000_020.0 - 1_000_000_020.0 % 60
    clock = Clock(monkeypatch, minute + 58.5)
    results = []
    for t in (58.5, 59.0, 59.5, 60.5, 61.0, 61.5):
        clock.now = minute + t
        results.append(_allowed())
    assert results == [True, True, True, False, False, False]
    clock.now = minute + 58.5 + 60.01  # the first request has left the window: one more may go, not two
    assert [_allowed(), _allowed()] == [True, False]


def test_refused_requests_do_not_count(monkeypatch):
    clock = Clock(monkeypatch, 1_000_000_000.0)
    assert [_allowed(limit=1) for _ in range(5)] == [True, False, False, False, False]
    clock.now += 60.5
    assert _allowed(limit=1)


@pytest.fixture
def redis_at(redis_url):
    """Point the limiter at another address for one test."""

    def point(url):
        settings.REDIS_URL = url
        redis_reset()

    yield point
    settings.REDIS_URL = redis_url
    redis_reset()


@pytest.fixture
def stalled_redis():
    """A server that accepts connections and never answers: what a stalled (or swapped-out) Redis looks like."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def test_with_redis_unreachable_it_refuses_with_503_and_retry_after(redis_at):
    redis_at(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RateLimited) as refused:
        rate_limit(scope="test", who="10.0.0.1", limit=3, message="over")
    assert refused.value.status == 503 and refused.value.retry_after == limits.UNAVAILABLE_RETRY_SECONDS
    assert "try again" in str(refused.value)


def test_with_redis_stalled_it_answers_503_within_its_socket_timeout(redis_at, stalled_redis):
    redis_at(stalled_redis)
    started = time.monotonic()
    with pytest.raises(RateLimited) as refused:
        rate_limit(scope="test", who="10.0.0.1", limit=3, message="over")
    assert refused.value.status == 503
    assert time.monotonic() - started < 4, "bounded by REDIS_TIMEOUT_SECONDS, not the 5 s of the shared client"


@pytest.mark.django_db
@override_settings(TOKENIZE_ANON_PER_MINUTE=3)
def test_the_tokenize_api_answers_a_json_503_with_retry_after_while_redis_is_stalled(client, redis_at, stalled_redis):
    from apps.tokenization.services import tokenizer_seed_builtins

    tokenizer_seed_builtins()
    redis_at(stalled_redis)
    response = client.post("/api/tokenize", json.dumps({"text": "a", "tokenizer": "gpt2"}),
                           content_type="application/json")
    assert response.status_code == 503 and response["Retry-After"] == str(limits.UNAVAILABLE_RETRY_SECONDS)
    assert "rate limit" in response.json()["error"]


@pytest.mark.django_db
def test_v1_completions_answers_a_json_503_with_retry_after_while_redis_is_stalled(client, tmp_path, redis_at,
                                                                                   stalled_redis):
    from tests.apps.registry.factories import make_model

    tiny = make_model(tmp_path, name="Tiny")
    redis_at(stalled_redis)
    response = client.post("/v1/completions", json.dumps({"model": tiny.slug, "prompt": "Hi", "max_tokens": 2}),
                           content_type="application/json")
    assert response.status_code == 503 and response["Retry-After"] == str(limits.UNAVAILABLE_RETRY_SECONDS)
    error = response.json()["error"]
    assert error["code"] == "rate_limiter_unavailable" and "try again" in error["message"]


def test_client_address_reads_an_http_request_or_a_websocket_scope():
    assert client_address(RequestFactory().get("/", REMOTE_ADDR="10.1.2.3")) == "10.1.2.3"
    assert client_address({"client": ["10.4.5.6", 5000]}) == "10.4.5.6"
    assert client_address({"client": None}) == "unknown"
