"""What every long job has in common: its status vocabulary, the fields a page needs to show it (a bar, a rate, an
ETA, the reason it failed) and the flag that asks it to stop. Abstract: each app keeps its own table.

A job kind (shards encoding, tokenizer training, model import, and the fine-tuning, RL, sweep and evaluation jobs to
come) inherits `Job`, adds what is its own, and is cancelled through apps.system.services.job_request_cancel. A
worker writing progress with QuerySet.update() sets `updated` itself (auto_now only acts on save()): `updated` is how
job_request_cancel tells a running job from one whose worker is gone.

Traces and generations are not Jobs: their states are part of what they promise outside (a trace is "ready", a
generation "done" or "stopped", as the OpenAI API reports it) and they have no progress bar or cancel flag.
"""

from django.db import models


class JobStatus(models.TextChoices):
    """The life of a long job. Terminal: succeeded, failed, cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def active(cls) -> tuple[str, str]:
        return (cls.QUEUED, cls.RUNNING)


class Job(models.Model):
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.FloatField(default=0.0)  # 0..1
    eta_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)  # why it failed, in words for the user
    cancel_requested = models.BooleanField(default=False)
    task_id = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    Status = JobStatus
    ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)

    class Meta:
        abstract = True

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE
