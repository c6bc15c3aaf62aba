"""Tokenizers: the built-in tiktoken encodings, character-level ones built from a corpus, and BPEs trained here.

The files a tokenizer needs live under ARTIFACTS_DIR (`path`); built-in encodings need none (their ranks ship in
data/tiktoken/). workers.gpt.tokenizers runs them all; selectors.tokenizer_runtime loads one from its row."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.system.models import Job, JobStatus


class TokenizerQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Built-in and seeded tokenizers (no owner) are everyone's; a trained one is its owner's (and staff's)."""
        if user is not None and user.is_authenticated and user.is_staff:
            return self
        if user is not None and user.is_authenticated:
            return self.filter(Q(owner__isnull=True) | Q(owner=user))
        return self.filter(owner__isnull=True)

    def ready(self):
        return self.filter(status=JobStatus.SUCCEEDED)


class Tokenizer(Job):
    class Kind(models.TextChoices):
        TIKTOKEN = "tiktoken", _("built-in (tiktoken)")
        CHAR = "char", _("character-level")
        BPE = "bpe", _("byte-level BPE")
        IMPORTED = "imported", _("imported with a model")

    class Pattern(models.TextChoices):
        GPT4 = "gpt4", "GPT-4 (cl100k_base)"
        GPT2 = "gpt2", "GPT-2"

    name = models.CharField(max_length=64, unique=True, help_text="what the playground, the API and URLs call it")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    builtin = models.BooleanField(default=False)
    description = models.TextField(blank=True)
    corpus = models.ForeignKey("corpora.Corpus", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="tokenizers", help_text="the corpus it was built or trained from")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="tokenizers")
    vocab_size = models.IntegerField(null=True, blank=True, help_text="as requested for training")
    n_vocab = models.IntegerField(null=True, blank=True, help_text="max id + 1: the size an embedding table needs")
    n_merges = models.IntegerField(default=0)
    pattern = models.CharField(max_length=10, blank=True, help_text="the split pattern of a trained BPE")
    special_tokens = models.JSONField(default=list, blank=True)
    rate = models.FloatField(null=True, blank=True, help_text="merges per second while training")
    phase = models.CharField(max_length=40, blank=True, help_text="what a running job is doing now")
    # relative to ARTIFACTS_DIR: a directory (bpe: bpe.tiktoken + bpe.json) or a file (char: JSON); empty for tiktoken
    path = models.CharField(max_length=300, blank=True)
    # sha256 of what decides the ids (ranks + specials, or the characters); part of every shards cache key
    fingerprint = models.CharField(max_length=64, blank=True)
    train_seconds = models.FloatField(null=True, blank=True)

    objects = TokenizerQuerySet.as_manager()

    class Meta:
        ordering = ["-builtin", "kind", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def ready(self) -> bool:
        return self.status == JobStatus.SUCCEEDED
