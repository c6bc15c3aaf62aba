"""Shared fixtures: a throw-away Redis for the whole session, and real processes started from the project's own
commands — Celery workers and the ASGI server — pointed at it and at the test database."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings

from apps.system.redisconn import free_port, redis_reset, redis_server_start

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def redis_url(tmp_path_factory):
    """A private redis-server on a free port (never the developer's or the system's), and everything that talks
    to Redis pointed at it: settings, the Celery app, the channel layer, and the processes tests start."""
    port = free_port()
    proc = redis_server_start(
        port=port, data_dir=tmp_path_factory.mktemp("redis"), persist=False, stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["LAB_TEST_REDIS_URL"] = url
    settings.REDIS_URL = settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = url
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [url]
    from channels.layers import channel_layers

    from config.celery import app

    app.conf.broker_url = app.conf.result_backend = url
    channel_layers.backends.clear()
    redis_reset()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_clean(redis_url):
    """An empty Redis for tests that look at what workers recorded."""
    redis_lib.Redis.from_url(redis_url).flushdb()
    yield redis_url


class Redis:
    """A private redis-server that a test can kill and bring back on the same port (without its data, as a crashed
    server with no persistence comes back)."""

    def __init__(self, data_dir):
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self):
        self.proc = redis_server_start(port=self.port, data_dir=self.data_dir, persist=False,
                                       stdout=subprocess.DEVNULL)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self, down_seconds: float = 1.0):
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def stop(self):
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def private_redis(tmp_path):
    server = Redis(tmp_path / "redis")
    yield server
    server.stop()


def database_url() -> str:
    """DATABASE_URL of the test database, for processes the tests start."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def subprocess_env(**extra) -> dict:
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "config.settings_test", "PYTHONUNBUFFERED": "1"}
    env["DATABASE_URL"] = database_url()
    return env | extra


class Processes:
    """Processes a test starts; all are killed at the end, whatever happened."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], **env) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = self.tmp_path / f"{name}.log"
        self.procs.append(proc)
        return proc

    def worker(self, queue: str, name: str) -> subprocess.Popen:
        from apps.system.management.commands.lab import worker_command

        cmd = worker_command(queue)
        cmd[cmd.index("-n") + 1] = name
        return self.start(name.replace("@", "-"), cmd)

    def asgi_server(self, **env) -> str:
        port = free_port()
        daphne = str(Path(sys.executable).parent / "daphne")
        proc = self.start("daphne", [daphne, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"], **env)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), timeout=20, what=f"the ASGI server at {url}", proc=proc)
        return url

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url + "/", timeout=1)
        return True
    except OSError:
        return False


def wait_for(condition, *, timeout: float, what: str, proc: subprocess.Popen | None = None, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{proc.log_path.read_text()[-3000:]}")
        time.sleep(interval)
    log = f"\n{proc.log_path.read_text()[-3000:]}" if proc is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def run_async(coro):
    """Run a coroutine to completion in a fresh thread: Playwright's sync API keeps an event loop running in the
    main thread for the session, where asyncio.run() would refuse."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(autouse=True)
def english_after_each_test():
    """A request in Chinese (Accept-Language or the cookie) leaves that language active in the thread; the next test
    starts in the default language again."""
    yield
    from django.utils import translation

    translation.deactivate()
