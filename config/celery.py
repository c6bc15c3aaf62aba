"""The Celery app. Tasks live in workers/tasks.py; two queues, `train` and `infer` (see DESIGN.md)."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("llmlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("train"), Queue("infer"))
# Training tasks are named `run_*` (run_train, run_resume, ...); everything else serves users and goes to `infer`.
app.conf.task_routes = {"workers.tasks.run_*": {"queue": "train"}, "workers.tasks.*": {"queue": "infer"}}
app.autodiscover_tasks(["workers"], related_name="tasks")
