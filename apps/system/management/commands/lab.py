"""`manage.py lab`: the whole stack in one terminal — Redis (embedded unless REDIS_URL is set), the ASGI server and
one Celery worker per queue. Ctrl-C stops everything it started; a second Ctrl-C stops it at once.

An embedded Redis that dies is started again on the same port (and the launcher says so): workers reconnect by
themselves, and runs whose messages went with it are queued again by the train workers' sweep (workers/recovery.py).
The web port is bound here, before daphne starts, and daphne is handed the listening socket: the URL printed is the
one that answers, and no other process can take the port in between.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque

import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from apps.system.redisconn import free_port, redis_server_start

GRACE_SECONDS = 10  # how long a Ctrl-C waits for workers to finish their step before killing them
REDIS_RESTARTS = 5  # an embedded Redis that dies this many times within REDIS_RESTART_WINDOW stops everything
REDIS_RESTART_WINDOW = 60.0


def web_listener(host: str, port: int, *, tries: int = 100) -> socket.socket:
    """A socket bound to `port` (or the next free port above it) and listening: daphne serves on it (--fd)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port, min(port + tries, 65536)):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
            sock.listen(128)
        except OSError:
            sock.close()
            continue
        sock.set_inheritable(True)
        return sock
    raise CommandError(f"No free port from {port} to {port + tries - 1} on {host}: free one, or pass --port.")


def _die_with_parent():
    """In each child: die with this launcher even if it is killed with SIGKILL (Linux), so nothing is left behind.

    A clean stop (Ctrl-C, SIGTERM) goes through shutdown() instead, which lets workers finish their step.
    """
    os.setsid()  # own process group: the terminal's Ctrl-C reaches only the launcher, which stops children in order
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_command(queue: str) -> list[str]:
    """The Celery command line of a worker for one queue (`make run` starts both; `make worker` one)."""
    celery = [os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "config", "worker", "--loglevel", "INFO"]
    celery += ["--without-gossip", "--without-mingle", "-Q", queue, "-n", f"{queue}@%h"]
    if queue == "train":
        # One training job per device at a time; solo pool so the job runs in the process that beats the heart.
        return [*celery, "--pool", "solo"]
    # Generation and traces, sharing the process's warm model cache. A generation's thread mostly waits on its
    # model's batch (workers/batching.py), so there are enough threads for twenty people generating at once.
    return [*celery, "--pool", "threads", "--concurrency", "32"]


QUEUES = ("train", "infer")


class Command(BaseCommand):
    help = "Run LLM Lab: Redis, the web server and the train/infer workers. Ctrl-C stops them all."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--no-workers", action="store_true", help="start only Redis and the web server")
        parser.add_argument("--worker", choices=QUEUES, help="run only a worker for this queue (another machine: set REDIS_URL, DATABASE_URL, ARTIFACTS_DIR)")

    def handle(self, *args, host, port, no_workers, worker, **options):
        if worker:
            self.redis_check(settings.REDIS_URL, hint="set REDIS_URL to the Redis of the machine running `make run`")
            os.execv(worker_command(worker)[0], worker_command(worker))
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started from a shell that ignores it
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops as cleanly as Ctrl-C
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        env = os.environ.copy()
        env["PYTHONUNBUFFERED"] = "1"
        try:
            env["REDIS_URL"] = self.redis(env)
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database ready.")
            call_command("seed", stdout=self.stdout)
            listener = web_listener(host, port)
            web_port = listener.getsockname()[1]
            if web_port != port:
                self.stdout.write(self.style.WARNING(f"Port {port} is taken; using {web_port}."))
            daphne = os.path.join(os.path.dirname(sys.executable), "daphne")
            fd = listener.fileno()
            if listener.family == socket.AF_INET6:  # daphne's --fd adopts IPv4 sockets only: let it bind the port
                listener.close()
                self.spawn("web", [daphne, "-b", host, "-p", str(web_port), "config.asgi:application"], env)
            else:
                self.spawn("web", [daphne, "--fd", str(fd), "config.asgi:application"], env, pass_fds=(fd,))
                listener.close()  # daphne holds its own copy now
            if not no_workers:
                for queue in QUEUES:
                    self.spawn(queue, worker_command(queue), env)
            url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{web_port}/"
            self.stdout.write(self.style.SUCCESS(f"\nLLM Lab is running at {url}   (Ctrl-C to stop)\n"))
            self.supervise()
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def redis(self, env) -> str:
        if url := os.environ.get("REDIS_URL"):
            self.redis_check(url, hint="start it, fix REDIS_URL, or unset REDIS_URL to use the embedded Redis")
            self.stdout.write(f"Using Redis at {url}.")
            return url
        port = free_port(6390)
        self.redis_port = port
        self.children.append(("redis", self.redis_start(port)))
        url = f"redis://127.0.0.1:{port}/0"
        settings.RUN_DIR.mkdir(parents=True, exist_ok=True)
        (settings.RUN_DIR / "redis.url").write_text(url)
        self.stdout.write(f"Embedded Redis started at {url}.")
        return url

    @staticmethod
    def redis_start(port: int) -> subprocess.Popen:
        (settings.VAR_DIR / "redis").mkdir(parents=True, exist_ok=True)
        try:
            return redis_server_start(
                port=port,
                data_dir=settings.VAR_DIR / "redis",
                persist=True,
                preexec_fn=_die_with_parent,
                stdout=open(settings.VAR_DIR / "redis" / "redis.log", "ab"),
            )
        except RuntimeError as exc:
            raise CommandError(f"Could not start the embedded Redis: {exc}") from None

    def redis_restart(self, index: int, how: str) -> None:
        """Start the embedded Redis again on its port, unless it keeps dying."""
        now = time.monotonic()
        self.redis_deaths.append(now)
        while self.redis_deaths and now - self.redis_deaths[0] > REDIS_RESTART_WINDOW:
            self.redis_deaths.popleft()
        if len(self.redis_deaths) >= REDIS_RESTARTS:
            raise CommandError(f"The embedded Redis exited {len(self.redis_deaths)} times within "
                               f"{REDIS_RESTART_WINDOW:.0f} s (last: {how}); stopping everything. Its log: "
                               f"{settings.VAR_DIR / 'redis' / 'redis.log'}")
        self.stderr.write(f"The embedded Redis exited ({how}); restarting it on port {self.redis_port}. Workers "
                          f"reconnect by themselves; runs whose messages were lost are queued again.")
        self.children[index] = ("redis", self.redis_start(self.redis_port))
        self.stdout.write(f"Embedded Redis restarted at redis://127.0.0.1:{self.redis_port}/0.")

    @staticmethod
    def redis_check(url: str, *, hint: str) -> None:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            raise CommandError(f"Redis at REDIS_URL={url} is unreachable ({exc}): {hint}.") from None

    def spawn(self, name, cmd, env, pass_fds=()):
        proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent, pass_fds=pass_fds)
        self.children.append((name, proc))

    def supervise(self):
        reported = set()
        self.redis_deaths: deque[float] = deque()
        while True:
            for index, (name, proc) in enumerate(self.children):
                if proc.poll() is not None and name not in reported:
                    code = proc.returncode
                    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
                    if name == "redis":  # only the embedded one is a child
                        self.redis_restart(index, how)
                        continue
                    reported.add(name)
                    if name == "web":
                        raise CommandError(f"{name} exited ({how}); stopping everything.")
                    self.stderr.write(
                        f"Worker '{name}' exited ({how}); the rest keeps running. Start it again in another "
                        f"terminal with: make worker QUEUE={name}"
                    )
            time.sleep(0.5)

    def shutdown(self):
        """Stop children in reverse order of start (workers, web, then Redis); a second Ctrl-C kills at once."""
        if self.stopping or not self.children:
            return
        self.stopping = True
        self.stdout.write("\nStopping…")
        hurry = False

        def on_second_interrupt(signum, frame):
            nonlocal hurry
            hurry = True

        previous = signal.signal(signal.SIGINT, on_second_interrupt)
        try:
            for name, proc in reversed(self.children):
                self.signal(proc, signal.SIGTERM)
                deadline = time.monotonic() + GRACE_SECONDS
                while proc.poll() is None and time.monotonic() < deadline and not hurry:
                    time.sleep(0.1)
                self.signal(proc, signal.SIGKILL)
                proc.wait()
            (settings.RUN_DIR / "redis.url").unlink(missing_ok=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        self.stdout.write("Stopped.")

    @staticmethod
    def signal(proc, signum):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass
