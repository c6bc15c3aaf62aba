import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] >= 5000


def _settings_in_fresh_process(env: dict, expr: str) -> str:
    code = f"import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup(); from django.conf import settings; print(repr(({expr})))"
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ARTIFACTS_DIR", "DEBUG", "ALLOWED_HOSTS", "LAB_VAR_DIR"}}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean | env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_secret_key_is_generated_once_and_kept_private(tmp_path):
    env = {"LAB_VAR_DIR": str(tmp_path)}
    first = _settings_in_fresh_process(env, "settings.SECRET_KEY")
    second = _settings_in_fresh_process(env, "settings.SECRET_KEY")
    assert first == second and len(first) >= 50
    key_file = tmp_path / "artifacts" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_settings_come_from_the_environment(tmp_path):
    env = {
        "LAB_VAR_DIR": str(tmp_path),
        "SECRET_KEY": "k" * 50,
        "DEBUG": "true",
        "ALLOWED_HOSTS": "lab.example, 10.0.0.5",
        "REDIS_URL": "redis://cache.example:6380/2",
        "ARTIFACTS_DIR": str(tmp_path / "elsewhere"),
        "DATABASE_URL": "postgres://lab:pw@db.example:5433/lab",
    }
    out = _settings_in_fresh_process(
        env,
        "settings.DEBUG, settings.ALLOWED_HOSTS, settings.CELERY_BROKER_URL, settings.CHANNEL_LAYERS['default']['CONFIG']['hosts'], "
        "str(settings.ARTIFACTS_DIR), settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['HOST'], settings.SECRET_KEY",
    )
    assert out == repr(
        (True, ["lab.example", "10.0.0.5"], "redis://cache.example:6380/2", ["redis://cache.example:6380/2"],
         str(tmp_path / "elsewhere"), "django.db.backends.postgresql", "db.example", "k" * 50)
    )


def test_without_redis_url_it_uses_the_embedded_redis_that_the_launcher_recorded(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "redis.url").write_text("redis://127.0.0.1:6391/0\n")
    assert _settings_in_fresh_process({"LAB_VAR_DIR": str(tmp_path)}, "settings.REDIS_URL") == "'redis://127.0.0.1:6391/0'"


@pytest.mark.skipif(not os.environ.get("TEST_POSTGRES_URL"), reason="set TEST_POSTGRES_URL=postgres://… to check PostgreSQL")
def test_postgresql_migrates_and_serves(tmp_path):
    env = {"LAB_VAR_DIR": str(tmp_path), "DATABASE_URL": os.environ["TEST_POSTGRES_URL"]}
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=clean | env, capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr
    vendor = _settings_in_fresh_process(env, "__import__('django.db').db.connection.vendor")
    assert vendor == "'postgresql'"
