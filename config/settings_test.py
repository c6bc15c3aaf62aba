"""Test settings: only overrides, each with its reason."""

import os
import tempfile
from pathlib import Path

# Tests never touch the developer's artifacts, database or Redis: everything goes to a throw-away folder, and
# tests/conftest.py starts a throw-away Redis and points REDIS_URL (and everything built on it) there.
_TMP = Path(os.environ.setdefault("LAB_TEST_DIR", tempfile.mkdtemp(prefix="llmlab-test-")))
os.environ["LAB_VAR_DIR"] = str(_TMP / "var")
os.environ["ARTIFACTS_DIR"] = str(_TMP / "artifacts")
# A developer's REDIS_URL is ignored on purpose; the fixture's server arrives as LAB_TEST_REDIS_URL in the processes
# it starts. Port 1 is unreachable, so a test that forgets the fixture fails loudly instead of using a real server.
os.environ["REDIS_URL"] = os.environ.get("LAB_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
# DATABASE_URL may point at PostgreSQL to run the suite there; by default SQLite in the throw-away folder.
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_TMP / 'db.sqlite3'}")

from .settings import *  # noqa: E402,F403
from .settings import DATABASES  # noqa: E402

# A file, not :memory:, so the live ASGI server and the Celery worker the integration tests start in other
# processes see the same test database.
DATABASES["default"]["TEST"] = {"NAME": str(_TMP / "test-db.sqlite3")}

# Fast hashing: the suite creates many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Short heartbeats so "a killed worker is marked gone" takes seconds, not the production 10 s.
WORKER_HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", 0.5))
WORKER_GONE_SECONDS = float(os.environ.get("WORKER_GONE_SECONDS", 3))

# Short training leases so "a killed train worker's run is picked up again" takes seconds, not the production 30 s.
TRAINING_LEASE_SECONDS = float(os.environ.get("TRAINING_LEASE_SECONDS", 5))
