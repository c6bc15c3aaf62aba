"""Generations and API tokens.

A generation is one request to continue a prompt (or a chat) with one model under one set of sampling settings. The
row is written when it is asked for and again when it ends, with every token and its probabilities, so a page can
be rebuilt from the database; while it runs, tokens stream over the channel layer (realtime.py). A branch is a
generation whose first tokens are its parent's up to a point, then an alternative the user picked.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Generation(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # waiting for an infer worker
        RUNNING = "running"  # loading the model or producing tokens
        DONE = "done"  # stop_reason says how it ended
        FAILED = "failed"  # `error` says why
        STOPPED = "stopped"  # the user pressed Stop, or the client went away

    class Mode(models.TextChoices):
        COMPLETION = "completion"
        CHAT = "chat"

    class StopReason(models.TextChoices):
        EOS = "eos", "end of text"  # the model produced an end-of-sequence token
        STOP_STRING = "stop", "stop string"
        LENGTH = "length", "max new tokens"
        USER = "user", "stopped"
        DISCONNECTED = "disconnected", "client disconnected"
        TIMEOUT = "timeout", "time limit"
        ERROR = "error", "error"

    FINISHED = (Status.DONE, Status.FAILED, Status.STOPPED)

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="its name in URLs and events")
    model = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="generations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="generations")
    via = models.CharField(max_length=10, default="web", help_text="web (the Generate page) or api")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.COMPLETION)
    prompt = models.TextField(blank=True, help_text="the text to continue (completion mode)")
    messages = models.JSONField(null=True, blank=True, help_text="the conversation (chat mode)")
    params = models.JSONField(help_text="sampling settings, validated: see services.params_parse")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="branches")
    branch_index = models.PositiveIntegerField(null=True, blank=True, help_text="the parent's token index replaced")
    prefix = models.JSONField(default=list, blank=True, help_text="token records copied from the parent, then the "
                                                                   "alternative picked")

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    stop_reason = models.CharField(max_length=12, choices=StopReason.choices, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)

    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    cropped = models.BooleanField(default=False, help_text="the context outgrew block_size: only its end was used")
    tokens = models.JSONField(default=list, blank=True, help_text="every token record, prefix included")
    text = models.TextField(blank=True, help_text="the generated text (cut at a stop string)")
    n_tokens = models.PositiveIntegerField(default=0)
    seed = models.BigIntegerField(null=True, blank=True, help_text="the seed used (chosen at random if none given)")
    stats = models.JSONField(default=dict, blank=True, help_text="ttft_ms, tokens_per_s, load_ms, queue_ms, ...")

    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["queued", "running", "done", "failed", "stopped"]),
                                   name="generation_status_valid"),
        ]

    def __str__(self) -> str:
        return f"generation {self.uid} ({self.status})"

    @property
    def finished_state(self) -> bool:
        return self.status in self.FINISHED


class ApiToken(models.Model):
    """A key for the OpenAI-compatible API. Only its sha256 is stored; the key is shown once, when it is made."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=60)
    prefix = models.CharField(max_length=16, help_text="the key's first characters, to recognise it in a list")
    key_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
