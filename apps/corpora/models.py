"""Corpora (text data sets) and their token shards. Files live under ARTIFACTS_DIR; rows say where and what."""

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.system import files
from apps.system.models import Job


class CorpusQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Bundled corpora are everyone's; an upload is its owner's (and staff's)."""
        if user is not None and user.is_authenticated and user.is_staff:
            return self
        if user is not None and user.is_authenticated:
            return self.filter(Q(builtin=True) | Q(owner=user))
        return self.filter(builtin=True)


class Corpus(models.Model):
    class Kind(models.TextChoices):
        TEXT = "text", _("text (pretraining)")
        CONVERSATIONS = "conversations", _("conversations (fine-tuning)")
        TASKS = "tasks", _("tasks with a checker (RL, evaluation)")

    name = models.CharField(max_length=100)
    # what the file holds: plain UTF-8 text; JSONL conversations in the OpenAI messages shape
    # (workers.gpt.conversations); or JSONL problems {"prompt", "answer", "match"} checked by workers.gpt.tasks
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TEXT, db_index=True)
    description = models.TextField(blank=True)
    builtin = models.BooleanField(default=False, help_text="bundled with LLM Lab and seeded at first start")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="corpora")
    # The text, UTF-8, under ARTIFACTS_DIR: corpora/<sha256>.txt (content-addressed: identical uploads share a file).
    path = models.CharField(max_length=300)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.BigIntegerField()
    n_chars = models.BigIntegerField()
    n_lines = models.BigIntegerField()
    # distinct characters, most frequent characters and words, character classes, sources, the split (see stats.py)
    stats = models.JSONField(default=dict)
    val_fraction = models.FloatField(default=0.1, help_text="share of the text, at its end, held out for validation")
    created = models.DateTimeField(auto_now_add=True)

    objects = CorpusQuerySet.as_manager()

    class Meta:
        ordering = ["-builtin", "name", "id"]
        verbose_name_plural = "corpora"

    def __str__(self) -> str:
        return self.name

    @property
    def file(self) -> Path:
        return files.artifact_path(self.path)

    @property
    def split(self) -> dict:
        return self.stats.get("split", {})


class Shards(Job):
    """A corpus encoded by a tokenizer into two token files (train, val) under ARTIFACTS_DIR/shards/<cache_key>/.

    The files are written by workers.gpt.data.TokenWriter and read with workers.gpt.data.open_tokens (a 24-byte header
    then little-endian uint16 or uint32 ids); `dtype` repeats the header's choice. `cache_key` hashes what decides
    the tokens (the corpus's sha256, the tokenizer's fingerprint, the split position), so the same pair is never
    encoded twice, even for two corpora with the same text."""

    corpus = models.ForeignKey(Corpus, on_delete=models.CASCADE, related_name="shards")
    tokenizer = models.ForeignKey("tokenization.Tokenizer", on_delete=models.CASCADE, related_name="shards")
    cache_key = models.CharField(max_length=64, db_index=True)
    val_fraction = models.FloatField()
    progress = models.FloatField(default=0.0, help_text="0..1, share of the corpus's characters encoded")
    rate = models.FloatField(null=True, blank=True, help_text="characters per second")
    tokens_per_second = models.FloatField(null=True, blank=True)
    dtype = models.CharField(max_length=6, blank=True, help_text="uint16 or uint32")
    train_path = models.CharField(max_length=300, blank=True)
    val_path = models.CharField(max_length=300, blank=True)
    n_train_tokens = models.BigIntegerField(null=True, blank=True)
    n_val_tokens = models.BigIntegerField(null=True, blank=True)
    tokens_per_char = models.FloatField(null=True, blank=True)
    tokens_per_byte = models.FloatField(null=True, blank=True)
    elapsed_seconds = models.FloatField(null=True, blank=True)
    reused = models.BooleanField(default=False, help_text="taken from the cache: another row encoded the same text")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "shards"
        constraints = [models.UniqueConstraint(fields=["corpus", "tokenizer", "cache_key"], name="shards_unique_pair")]

    def __str__(self) -> str:
        return f"{self.corpus} × {self.tokenizer} ({self.status})"

    @property
    def total_tokens(self) -> int | None:
        if self.n_train_tokens is None or self.n_val_tokens is None:
            return None
        return self.n_train_tokens + self.n_val_tokens
