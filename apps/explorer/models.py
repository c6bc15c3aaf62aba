"""Traces: one forward pass of one model over one text, computed by an `infer` worker and kept as a file.

A trace is cached per (model weights, text): `key` is a keyed hash of both, so the same text on the same model is
computed once, and a trace's URL cannot be guessed from the outside. The file (workers/gpt/trace.py's binary format)
lives under ARTIFACTS_DIR/explorer/traces/<key>.lltr; this row says whether it is there yet, and why not.
"""

from pathlib import Path

from django.db import models
from django.db.models import Q

from apps.system import files


class Trace(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # waiting for an infer worker
        RUNNING = "running"  # a worker is loading the model or running the pass
        READY = "ready"  # the file is written
        FAILED = "failed"  # `error` says why, in words for the user

    PENDING = (Status.QUEUED, Status.RUNNING)

    key = models.CharField(max_length=64, unique=True)
    # what to trace: a model reference (see apps.explorer.selectors.source_get) and the text as the user typed it;
    # no foreign key, so deleting a model or a run never fails on its traces (they become unreachable and are pruned)
    source = models.CharField(max_length=100, db_index=True)
    source_label = models.CharField(max_length=200, blank=True)
    text = models.TextField()

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    notes = models.JSONField(default=list, blank=True, help_text="what the user should know: truncation, dropped characters")
    n_tokens = models.PositiveIntegerField(null=True, blank=True, help_text="tokens traced")
    text_tokens = models.PositiveIntegerField(null=True, blank=True, help_text="tokens in the whole text")
    size_bytes = models.PositiveIntegerField(default=0)
    compute_ms = models.FloatField(null=True, blank=True, help_text="forward pass and packing, the model warm or not")
    load_ms = models.FloatField(null=True, blank=True, help_text="loading the model, 0 when it was warm")
    worker = models.CharField(max_length=200, blank=True)
    task_id = models.CharField(max_length=64, blank=True)

    created = models.DateTimeField(auto_now_add=True)
    queued = models.DateTimeField(null=True, blank=True, help_text="when it last entered the queue")
    finished = models.DateTimeField(null=True, blank=True)
    used = models.DateTimeField(null=True, blank=True, db_index=True, help_text="last requested: the cache evicts the oldest")

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["queued", "running", "ready", "failed"]), name="trace_status_valid")
        ]

    def __str__(self) -> str:
        return f"trace {self.key[:10]} of {self.source}"

    @property
    def file(self) -> Path:
        return files.artifact_path(trace_path(self.key))

    @property
    def pending(self) -> bool:
        return self.status in self.PENDING


def trace_path(key: str) -> str:
    """Where a trace's file lives, relative to ARTIFACTS_DIR."""
    return f"explorer/traces/{key}.lltr"


class Share(models.Model):
    """A text too long to ride in a share link's URL (browsers, proxies and servers cap a URL at a few kB): the link
    carries `key` instead. The key is a keyed hash of the text, so the same text always gets the same link and a link
    cannot be guessed from outside; the text is kept until an admin deletes it."""

    key = models.CharField(max_length=32, unique=True)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"share {self.key}"
