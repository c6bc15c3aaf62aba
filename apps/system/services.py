import json
import secrets

from django.contrib.auth import get_user_model

from apps.system import realtime
from apps.system.redisconn import redis_client

# A worker's last heartbeat is kept this long, so a killed worker stays listed as gone for a while before it vanishes.
WORKER_RECORD_TTL_SECONDS = 300


def worker_record_heartbeat(*, status: dict) -> None:
    redis_client().set(realtime.worker_key(status["name"]), json.dumps(status), ex=WORKER_RECORD_TTL_SECONDS)


def worker_record_gone(*, name: str) -> None:
    redis_client().delete(realtime.worker_key(name))


def admin_ensure(*, username: str = "admin") -> str | None:
    """Create the first superuser with a generated password; return the password, or None if a superuser exists."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    return password
