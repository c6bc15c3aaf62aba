"""Each worker announces itself: a heartbeat with its queues, device and current tasks, every few seconds.

The heartbeat goes to Redis (so a page opened later sees the worker at once) and to the System group (so open pages
update live). A clean shutdown says goodbye; a killed worker simply stops beating and pages mark it gone.
Signal handlers run in the worker's main process: the pools we use (solo, threads) run tasks there too.
"""

import logging
import os
import platform
import threading
import time

from celery.signals import celeryd_after_setup, task_postrun, task_prerun, worker_ready, worker_shutting_down

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, *, name: str, queues: list[str], pool: str, concurrency: int):
        super().__init__(name="heartbeat", daemon=True)
        self.identity = {
            "name": name,
            "host": platform.node(),
            "pid": os.getpid(),
            "queues": queues,
            "pool": pool,
            "concurrency": concurrency,
            "python": platform.python_version(),
            "started": time.time(),
        }
        self.tasks: dict[str, dict] = {}
        self.device: dict | None = None  # described after the first beat (see run)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def status(self) -> dict:
        with self.lock:
            tasks = sorted(self.tasks.values(), key=lambda t: t["started"])
        return {**self.identity, "device": self.device, "tasks": tasks, "ts": time.time()}

    def task_started(self, task_id: str, name: str) -> None:
        with self.lock:
            self.tasks[task_id] = {"id": task_id, "name": name.rsplit(".", 1)[-1], "started": time.time()}
        self.wake.set()

    def task_finished(self, task_id: str) -> None:
        with self.lock:
            self.tasks.pop(task_id, None)
        self.wake.set()

    def run(self) -> None:
        from django.conf import settings

        from apps.system import realtime
        from apps.system.services import worker_record_heartbeat
        from workers.devices import describe_device

        first = True
        while not self.stopping.is_set():
            if not first and self.device is None:
                # after the first beat: importing torch to describe the device takes seconds in a fresh process, and
                # a worker that takes tasks before its first beat would look gone to whoever watches its heartbeat
                self.device = describe_device()
            first = False
            status = self.status()
            try:
                worker_record_heartbeat(status=status)
            except Exception:  # Redis hiccup: keep beating, the next beat repairs the picture
                log.warning("heartbeat not recorded", exc_info=True)
            realtime.publish(realtime.workers_group(), realtime.heartbeat_event(status))
            self.wake.wait(settings.WORKER_HEARTBEAT_SECONDS)
            self.wake.clear()
        realtime.publish_thread_close()

    def say_goodbye(self) -> None:
        from apps.system import realtime
        from apps.system.services import worker_record_gone

        self.stopping.set()
        self.wake.set()
        try:
            worker_record_gone(name=self.identity["name"])
        except Exception:
            log.warning("goodbye not recorded", exc_info=True)
        realtime.publish(realtime.workers_group(), realtime.worker_gone_event(self.identity["name"]))


_heartbeat: Heartbeat | None = None
_identity: dict = {}
_device: dict = {}


@celeryd_after_setup.connect
def _remember_identity(sender, instance, **kwargs):
    pool = instance.pool_cls if isinstance(instance.pool_cls, str) else instance.pool_cls.__module__.rsplit(".", 1)[-1]
    _identity.update(
        name=sender,
        queues=sorted(instance.app.amqp.queues.consume_from),
        pool=pool,
        concurrency=1 if pool == "solo" else instance.concurrency,  # solo ignores --concurrency (default: cores)
    )
    # describe the device (importing torch) now, before the worker takes tasks: a first task importing torch at the
    # same time as the heartbeat thread would hold the import lock for seconds, and the worker would look gone
    from workers.devices import describe_device

    _device.update(describe_device())


@worker_ready.connect
def _start(sender, **kwargs):
    global _heartbeat
    _heartbeat = Heartbeat(**_identity)
    _heartbeat.device = dict(_device) or None
    _heartbeat.start()


@worker_shutting_down.connect
def _stop(sender, **kwargs):
    if _heartbeat:
        _heartbeat.say_goodbye()


@task_prerun.connect
def _task_started(sender, task_id, task, **kwargs):
    if _heartbeat:
        _heartbeat.task_started(task_id, task.name)


@task_postrun.connect
def _task_finished(sender, task_id, **kwargs):
    if _heartbeat:
        _heartbeat.task_finished(task_id)
