"""The two helper threads of a training job (workers/training.py), so the training loop never waits on the database
or the network:

    Supervisor  renews the run's lease, hears "cancel" on Redis at once (and reads the database flag at every renewal,
                should a message be missed), and notices when the lease was lost to another worker.
    Recorder    buffers steps, evaluations and samples; every FLUSH_SECONDS writes them to the database, then
                publishes them.
"""

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection

from apps.system.realtime import publish, publish_thread_close
from apps.training import lease, realtime
from apps.training.models import Run
from workers.recovery import SHUTDOWN

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2  # steps reach the database and the dashboards this often


class Supervisor(threading.Thread):
    """Keeps the lease alive and listens for "cancel" on the run's Redis control channel (the database flag is read
    at every renewal too, should a message be missed). Sets `lost` when another worker holds the run now."""

    def __init__(self, run_id: int, token: str, external_stop: threading.Event | None = None):
        super().__init__(name=f"run-{run_id}-supervisor", daemon=True)
        self.run_id, self.token = run_id, token
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.stopping = threading.Event()
        self.external_stop = external_stop
        self.interval = max(0.2, settings.TRAINING_LEASE_SECONDS / 3)

    def run(self) -> None:
        from apps.system.redisconn import redis_client

        pubsub = None
        try:
            pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(realtime.control_channel(self.run_id))
        except Exception:
            log.warning("run %s: no control channel; cancel is seen at lease renewals", self.run_id, exc_info=True)
            pubsub = None
        next_renewal = 0.0
        while not self.stopping.is_set():
            if time.monotonic() >= next_renewal:
                self.renew()
                next_renewal = time.monotonic() + self.interval
            if pubsub is not None:
                try:
                    message = pubsub.get_message(timeout=0.25)
                    if message and message.get("data") == realtime.CANCEL:
                        self.cancelled.set()
                except Exception:
                    log.warning("run %s: control channel lost", self.run_id, exc_info=True)
                    pubsub = None
            else:
                self.stopping.wait(0.25)
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                pass
        connection.close()

    def renew(self) -> None:
        try:
            held, cancel = lease.run_renew(run_id=self.run_id, token=self.token)
        except Exception:  # the database is busy or away: try again next time; the lease has slack
            log.warning("run %s: lease renewal failed", self.run_id, exc_info=True)
            close_old_connections()
            return
        if not held:
            self.lost.set()
        if cancel:
            self.cancelled.set()

    def stop_requested(self) -> bool:
        if self.external_stop is not None and self.external_stop.is_set():
            self.cancelled.set()
        return self.cancelled.is_set() or self.lost.is_set() or SHUTDOWN.is_set()

    def why(self) -> str:
        if self.lost.is_set():
            return "lost"
        if self.cancelled.is_set():
            return "cancel"
        return "shutdown"

    def wait_stop(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop_requested():
                return True
            time.sleep(0.05)
        return self.stop_requested()

    def close(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(5)


class Recorder(threading.Thread):
    """Buffers steps, evaluations and samples; every FLUSH_SECONDS writes them to the database and then publishes
    them (lease.run_record). A failed write keeps the buffer for the next try, so nothing is lost to a busy
    database; (run, step) uniqueness makes a repeated write harmless."""

    def __init__(self, run_id: int, token: str):
        super().__init__(name=f"run-{run_id}-recorder", daemon=True)
        self.run_id, self.token = run_id, token
        self.lock = threading.Lock()
        self.steps: list[list] = []
        self.evals: list[list] = []
        self.samples: list[tuple[int, str]] = []
        self.progress: dict | None = None
        self.stopping = threading.Event()
        self.lost = threading.Event()
        self.closed = False

    def add_step(self, row: list, progress: dict) -> None:
        with self.lock:
            self.steps.append(row)
            self.progress = progress

    def add_eval(self, row: list, best_val: float | None) -> None:
        with self.lock:
            self.evals.append(row)
            if self.progress is not None:
                self.progress = self.progress | {"best_val_loss": best_val}
            else:
                self.progress = {"status": Run.Status.RUNNING, "step": row[0], "elapsed": row[3], "latest": {},
                                 "best_val_loss": best_val, "max_steps": None, "eta_seconds": None}

    def add_sample(self, step: int, text: str) -> None:
        with self.lock:
            self.samples.append((step, text))

    def run(self) -> None:
        try:
            while not self.stopping.wait(FLUSH_SECONDS):
                self.flush()
            self.flush()
        finally:
            publish_thread_close()
            connection.close()

    def flush(self) -> None:
        with self.lock:
            steps, evals, samples, progress = self.steps, self.evals, self.samples, self.progress
            self.steps, self.evals, self.samples = [], [], []
        if not (steps or evals or samples):
            return
        if progress is None:  # only the step-0 sample so far: it waits for the step-0 evaluation it belongs to
            self._put_back(steps, evals, samples)
            return
        try:
            ok = lease.run_record(run_id=self.run_id, token=self.token, steps=steps, evals=evals, samples=samples,
                                     progress=progress)
        except Exception:
            log.warning("run %s: could not record %d steps; trying again", self.run_id, len(steps), exc_info=True)
            close_old_connections()
            self._put_back(steps, evals, samples)
            return
        if not ok:
            self.lost.set()

    def _put_back(self, steps, evals, samples) -> None:
        with self.lock:
            self.steps[:0], self.evals[:0], self.samples[:0] = steps, evals, samples

    def publish_preparing(self, state) -> None:
        publish(realtime.run_group(self.run_id), realtime.preparing_event(
            self.run_id, progress=state.progress, eta_seconds=state.eta_seconds))

    def close(self) -> None:
        """Stop after a last flush (from the training thread when the recorder never started)."""
        if self.closed:
            return
        self.closed = True
        if self.is_alive():
            self.stopping.set()
            self.join()
        else:
            self.flush()
