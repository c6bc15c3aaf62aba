import pytest
import redis as redis_lib

from tests.data_fixtures import user  # noqa: F401


@pytest.fixture(autouse=True)
def fresh_rate_limits(redis_url):
    """Each benchmark starts with empty rate-limit windows: the benchmarks share one Redis, and twenty anonymous
    streams in one would otherwise spend the anonymous generation limit of the next."""
    client = redis_lib.Redis.from_url(redis_url)
    for key in client.scan_iter("lab:limit:*"):
        client.delete(key)
    yield
