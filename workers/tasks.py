"""Celery tasks: thin, they take ids and call the glue modules. Importing this module must not import torch.

Routing (config/celery.py): tasks named run_* go to the `train` queue, all others to `infer`.
"""

from celery import shared_task

from workers import heartbeat  # noqa: F401  (connects the worker's heartbeat signals)

# Every training task (name run_*, queue `train`) is declared with these: the message is acknowledged only when the
# task ends, and a worker killed mid-run (SIGKILL, reboot) hands it back to the queue for another worker.
TRAIN_TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task
def device_probe() -> dict:
    """Describe the device of the worker that runs this (used by the System page's tests and estimates)."""
    from workers.devices import describe_device

    return describe_device()
