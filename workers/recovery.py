"""Train workers look after training runs beyond the one they hold. Importing this module must not import torch.

Why: a run's task is acknowledged late (TRAIN_TASK_OPTIONS), so a worker killed mid-run leaves its message unacked
in Redis. But kombu's Redis transport hands an unacked message back only after its visibility timeout (an hour by
default) — and a shorter timeout would hand a healthy long run to a second worker. So the database holds the truth
instead: a worker holds a lease on its run and renews it every few seconds (workers/training.py), and every train
worker sweeps for runs whose lease ran out and queues them again (apps.training.lease.run_recover_lost). The run
then continues from its last checkpoint on the next free worker. When the old message does come back, the task finds
the run finished or held by a live worker and does nothing.

A message can also be lost while its run is still queued: Redis restarted without its data (or was away when the
run was queued, or when a stopping worker put its run back). Such a run would wait for ever beside an idle worker,
so the same sweep also looks for runs queued for over TRAINING_STRANDED_SECONDS whose message Redis does not hold
(neither waiting in the train queue nor delivered and unacked) and enqueues them again
(apps.training.lease.run_requeue_stranded). A guess that is wrong costs only a second delivery, which the task
ignores as above. While Redis is away the sweep concludes nothing; workers reconnect when it is back
(CELERY_BROKER_CONNECTION_MAX_RETRIES = None), and `manage.py lab` restarts an embedded Redis that died.

Also: a worker asked to shut down (Ctrl-C, SIGTERM) sets SHUTDOWN; the run it holds saves a checkpoint within one
step and goes back to the queue, so `make run`'s Ctrl-C loses no training.
"""

import logging
import threading

from celery.signals import worker_ready, worker_shutting_down

log = logging.getLogger(__name__)

SHUTDOWN = threading.Event()  # this worker process is shutting down: runs checkpoint and go back to the queue


class Sweeper(threading.Thread):
    """Every third of a lease: re-queue runs whose worker stopped renewing its lease, and runs whose message was lost."""

    def __init__(self):
        super().__init__(name="training-sweeper", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        from django.conf import settings
        from django.db import close_old_connections, connection

        from apps.training.lease import run_recover_lost, run_requeue_stranded

        interval = max(0.5, settings.TRAINING_LEASE_SECONDS / 3)
        while not self.stopping.wait(interval):
            try:
                close_old_connections()
                run_recover_lost()
                run_requeue_stranded()
            except Exception:  # a database hiccup: the next sweep tries again
                log.warning("training recovery sweep failed", exc_info=True)
        connection.close()


def measure_device() -> None:
    """Record this worker's device and its peak FLOP/s, so the submit form can estimate run times here."""
    from django.db import connection

    from apps.system.devices import device_profile_record
    from workers.devices import describe_device, peak_flops

    try:
        device = describe_device()
        device_profile_record(device=device, peak_flops=peak_flops(device["kind"]))
    except Exception:
        log.warning("could not measure this worker's device", exc_info=True)
    finally:
        connection.close()


_sweeper: Sweeper | None = None


@worker_ready.connect
def _start(sender, **kwargs):
    global _sweeper
    app = getattr(sender, "app", None)
    queues = set(app.amqp.queues.consume_from) if app is not None else set()
    if "train" not in queues:
        return
    SHUTDOWN.clear()
    measure_device()  # before the first task: measured on an idle device, in under a second
    _sweeper = Sweeper()
    _sweeper.start()


@worker_shutting_down.connect
def _stopping(sender, **kwargs):
    SHUTDOWN.set()
    if _sweeper is not None:
        _sweeper.stopping.set()
