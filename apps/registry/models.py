"""The model registry: every model the app can run is a row here, with where its weights are and where it came from.

A model is either promoted from a training run's checkpoint or imported (a GGUF file, a Hugging Face directory;
SmolLM2-135M-Instruct at first start). Its files live under ARTIFACTS_DIR/models/<id>/: the weights and JSON sidecar
in checkpoint.py's format (optimizer state left out), and an imported tokenizer. Lineage is read from the foreign
keys: corpus → tokenizer → run → checkpoint (step) → model.
"""

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.system import files
from apps.system.models import Job


class ModelQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Published models are everyone's; drafts and archived ones their owner's; staff see all."""
        if user is not None and user.is_authenticated and user.is_staff:
            return self
        published = Q(status=Model.Status.PUBLISHED)
        if user is not None and user.is_authenticated:
            return self.filter(published | Q(owner=user))
        return self.filter(published)

    def usable_by(self, user):
        """What a user may generate with: visible and not archived."""
        return self.visible_to(user).exclude(status=Model.Status.ARCHIVED)


class Model(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"  # its owner and staff can use it; nobody else sees it
        PUBLISHED = "published"  # everyone can use it, in the pages and the API
        ARCHIVED = "archived"  # kept, but no longer offered

    class Source(models.TextChoices):
        RUN = "run", "promoted from a training run"
        IMPORTED = "imported", "imported"

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True, help_text="its id in URLs and in the API's `model` field")
    description = models.TextField(blank=True)

    architecture = models.CharField(max_length=10, help_text="block style: gpt2 or llama")
    config = models.JSONField(help_text="workers.gpt.config.GPTConfig.to_dict()")
    n_params = models.BigIntegerField()
    # the tokenizer row (playground, lineage); tokenizer_spec is how a worker loads it even if the row is deleted:
    # {"kind", "name", "path", "fingerprint"} as apps.tokenization's rows hold them
    tokenizer = models.ForeignKey("tokenization.Tokenizer", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="models")
    tokenizer_spec = models.JSONField(default=dict)
    chat_template = models.TextField(blank=True, help_text="Jinja; when set, the Generate page offers chat")
    stop_ids = models.JSONField(default=list, blank=True, help_text="token ids that end a generation")

    path = models.CharField(max_length=300, help_text="the .safetensors file, relative to ARTIFACTS_DIR")
    size_bytes = models.BigIntegerField(help_text="weights and sidecar")
    sha256 = models.CharField(max_length=64, help_text="of the weights file")

    source = models.CharField(max_length=10, choices=Source.choices)
    source_detail = models.JSONField(default=dict, blank=True, help_text="file name, format, notes, metadata")
    # SET_NULL: a run's checkpoints rotate and runs may be deleted; the model keeps its own copy of the weights,
    # and step / val_loss / lineage remember where it came from
    run = models.ForeignKey("training.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="models")
    checkpoint = models.ForeignKey("training.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="models")
    step = models.PositiveIntegerField(null=True, blank=True)
    val_loss = models.FloatField(null=True, blank=True)
    lineage = models.JSONField(default=dict, blank=True, help_text="names at promotion time, kept if rows go")
    # the model a fine-tuning or RL run started from: lineage base model -> data set -> run -> this model
    base = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived")

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="registry_models")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = ModelQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["draft", "published", "archived"]),
                                   name="registry_model_status_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def file(self) -> Path:
        return files.artifact_path(self.path)

    @property
    def sidecar(self) -> Path:
        return self.file.with_suffix(".json")

    @property
    def directory(self) -> Path:
        return self.file.parent

    @property
    def is_chat(self) -> bool:
        return bool(self.chat_template)

    @property
    def block_size(self) -> int:
        return self.config["block_size"]


def model_dir(model_id: int) -> str:
    """Where a model's files live, relative to ARTIFACTS_DIR."""
    return f"models/{model_id}"


def export_dir(model_id: int) -> str:
    """Where a model's exported archives live, relative to ARTIFACTS_DIR (removed with the model)."""
    return f"exports/{model_id}"


class ModelImport(Job):
    """An import job: a file (or a Hugging Face directory) being converted by an infer worker. The model row is made
    only when it succeeds, so a refused file leaves no model behind; this row keeps the reason for the page."""

    name = models.CharField(max_length=100)
    source_path = models.CharField(max_length=500, help_text="the file or directory on the server")
    uploaded = models.BooleanField(default=False, help_text="source_path is a temporary upload, removed afterwards")
    publish = models.BooleanField(default=False, help_text="publish the model when the import succeeds")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="model_imports")
    phase = models.CharField(max_length=80, blank=True)
    model = models.ForeignKey(Model, null=True, blank=True, on_delete=models.SET_NULL, related_name="imports")

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"import {self.name} ({self.status})"


class ModelExport(Job):
    """A model written out in another layout (a zip of a Hugging Face directory) by an infer worker, for download.

    One archive per model and format: a second request while one runs gets the running job, and one after it
    succeeded gets the finished archive (a model's weights never change). The archive lands at `path` (relative to
    ARTIFACTS_DIR, under exports/<model id>/) only when complete."""

    class Format(models.TextChoices):
        HF = "hf", _("Hugging Face layout (.zip)")

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="exports")
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.HF)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="model_exports", help_text="who asked for it (None: a visitor)")
    phase = models.CharField(max_length=80, blank=True)
    path = models.CharField(max_length=300, blank=True, help_text="the archive, relative to ARTIFACTS_DIR")
    size_bytes = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"export {self.model_id} {self.format} ({self.status})"

    @property
    def file(self) -> Path | None:
        return files.artifact_path(self.path) if self.path else None
