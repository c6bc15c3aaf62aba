"""`manage.py lab` (what `make run` runs), end to end: real Redis, daphne and both workers; Ctrl-C stops them all."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from apps.system.redisconn import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[3]


class Lab:
    def __init__(self, tmp_path: Path, *extra, **env):
        clean = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "ARTIFACTS_DIR", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}}
        self.log = tmp_path / f"lab-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "lab", *extra],
            cwd=ROOT,
            env=clean | {"LAB_VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"} | env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_running(self, timeout: float = 90) -> str:
        match = wait_for(lambda: re.search(r"running at (http://\S+)", self.output), timeout=timeout, what="the launcher", proc=self.proc)
        return match.group(1)

    def children(self) -> list[int]:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def kill(self) -> None:
        """After a failed assertion: SIGKILL the launcher; its children die with it (PR_SET_PDEATHSIG)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, *, times: int = 1) -> int:
        for _ in range(times):
            self.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        return self.proc.wait(60)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _live_workers(url: str) -> set[str]:
    try:
        html = urllib.request.urlopen(url + "system/", timeout=2).read().decode()
    except OSError:
        return set()
    return set(re.findall(r'data-worker="([^"]+)" data-state="live"', html))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the launcher's children")
def test_one_command_starts_everything_and_ctrl_c_stops_everything(tmp_path):
    taken = socket.socket()
    port = free_port(18000)
    taken.bind(("127.0.0.1", port))
    taken.listen()
    lab = None
    try:
        expected = free_port(port + 1)
        lab = Lab(tmp_path, "--port", str(port))
        url = lab.wait_running()
        assert f"Port {port} is taken; using {expected}." in lab.output
        assert url == f"http://localhost:{expected}/"
        password = re.search(r"user: admin  password: (\S+)", lab.output).group(1)
        assert len(password) >= 12
        assert "Embedded Redis started at redis://127.0.0.1:" in lab.output
        workers = wait_for(lambda: _live_workers(url) >= {f"train@{socket.gethostname()}", f"infer@{socket.gethostname()}"} and _live_workers(url), timeout=90, what="both workers on the System page", proc=lab.proc)
        children = lab.children()
        assert len(children) == 4, "redis, web, train worker, infer worker"
        assert lab.stop() == 0
        assert "Stopped." in lab.output
        assert not [pid for pid in children if _alive(pid)], "every process it started has stopped"
    finally:
        taken.close()
        if lab:
            lab.kill()
    print(f"workers seen live: {sorted(workers)}")

    # Second start: the admin exists, so no password is printed; a double Ctrl-C still leaves nothing running.
    again = Lab(tmp_path, "--port", str(free_port(18100)))
    try:
        again.wait_running()
        assert "password" not in again.output
        children = again.children()
        again.stop(times=2)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        again.kill()


def test_unreachable_redis_gets_one_clear_line_not_a_traceback(tmp_path):
    lab = Lab(tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    assert lab.proc.wait(60) == 1
    assert "Traceback" not in lab.output
    assert "Redis at REDIS_URL=redis://127.0.0.1:1/0 is unreachable" in lab.output
    assert "unset REDIS_URL to use the embedded Redis" in lab.output


def test_a_worker_alone_refuses_an_unreachable_redis_in_one_line(tmp_path):
    lab = Lab(tmp_path, "--worker", "train", REDIS_URL="redis://127.0.0.1:1/0")
    assert lab.proc.wait(60) == 1
    assert "Traceback" not in lab.output
    assert "set REDIS_URL to the Redis of the machine running" in lab.output


@pytest.fixture(scope="module")
def lab_home(tmp_path_factory):
    """One LAB_VAR_DIR for the tests below: the first start migrates and seeds (imports SmolLM2, the slow part), the
    next ones find it done."""
    return tmp_path_factory.mktemp("lab-home")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the launcher's children")
def test_an_embedded_redis_that_dies_is_restarted_on_its_port_and_the_rest_keeps_running(lab_home):
    lab = Lab(lab_home, "--no-workers", "--port", str(free_port(18200)))
    try:
        url = lab.wait_running(timeout=240)
        redis_url = (lab_home / "var" / "run" / "redis.url").read_text().strip()
        server = next(pid for pid in lab.children() if any("redis-server" in part for part in _cmdline(pid)))
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: "restarting it on port" in lab.output, timeout=30, what="the launcher to notice",
                 proc=lab.proc)
        wait_for(lambda: _pings(redis_url), timeout=30, what="Redis back at the same URL", proc=lab.proc)
        assert "The embedded Redis exited (signal SIGKILL)" in lab.output and "stopping everything" not in lab.output
        assert urllib.request.urlopen(url, timeout=10).status == 200
        assert lab.stop() == 0
    finally:
        lab.kill()


def _pings(url: str) -> bool:
    import redis as redis_lib

    try:
        return redis_lib.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis_lib.RedisError:
        return False


def test_the_web_port_is_bound_before_daphne_starts_and_the_next_one_is_taken_when_busy():
    from apps.system.management.commands.lab import web_listener

    taken = socket.socket()
    port = free_port(18300)
    taken.bind(("127.0.0.1", port))  # bound, not listening: what a process grabbing the port in between holds
    try:
        listener = web_listener("127.0.0.1", port)
        try:
            got = listener.getsockname()[1]
            assert got != port
            socket.create_connection(("127.0.0.1", got), timeout=2).close()  # listening already: nobody can take it
        finally:
            listener.close()
    finally:
        taken.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the launcher's children")
def test_daphne_serves_the_socket_the_launcher_bound_and_the_printed_url_is_the_real_one(lab_home):
    taken = socket.socket()
    port = free_port(18400)
    taken.bind(("127.0.0.1", port))
    taken.listen()
    lab = Lab(lab_home, "--no-workers", "--port", str(port))
    try:
        url = lab.wait_running(timeout=240)
        printed = int(url.rsplit(":", 1)[1].rstrip("/"))
        assert printed != port and f"Port {port} is taken; using {printed}." in lab.output
        web = next(pid for pid in lab.children() if any(part.endswith("daphne") for part in _cmdline(pid)))
        assert "--fd" in _cmdline(web) and "-p" not in _cmdline(web)  # daphne binds nothing itself: no race
        assert wait_for(lambda: _status(url), timeout=30, what="the printed URL to answer", proc=lab.proc) == 200
        assert lab.stop() == 0
    finally:
        taken.close()
        lab.kill()


def _status(url: str) -> int | None:
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except OSError:
        return None
