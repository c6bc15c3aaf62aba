"""`manage.py check --deploy` can be made clean from the environment alone: HTTPS cookies, the proxy header, HSTS
and the redirect are settings (README, "Configuration")."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLEARED = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ARTIFACTS_DIR", "DEBUG", "ALLOWED_HOSTS", "LAB_VAR_DIR", "HTTPS",
           "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_PRELOAD", "DJANGO_SETTINGS_MODULE",
           "DJANGO_ALLOW_ASYNC_UNSAFE"}  # the browser tests set it for their own process; a deployment never does


def check_deploy(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env = clean | {"LAB_VAR_DIR": str(tmp_path), "SECRET_KEY": secrets.token_urlsafe(50),
                   "DJANGO_SETTINGS_MODULE": "config.settings"} | env
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_when_https_settings_are_set(tmp_path):
    result = check_deploy(tmp_path, HTTPS="1", SECURE_HSTS_SECONDS="3600", SECURE_HSTS_PRELOAD="1",
                          SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_names_what_is_missing_on_a_plain_http_setup(tmp_path):
    result = check_deploy(tmp_path)
    assert result.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):  # HSTS, redirect, cookies
        assert code in result.stdout + result.stderr
