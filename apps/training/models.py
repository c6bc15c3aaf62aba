"""Pretraining runs and what they leave behind: per-step metrics, evaluations (with a generated sample), checkpoints,
and a timeline of what happened to the run. Checkpoint files live under ARTIFACTS_DIR/runs/<id>/; rows say where.
"""

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.system import files


GRPO_LORA_ALPHA_PER_RANK = 2  # a GRPO run's LoRA alpha is 2 r (the usual choice; the form asks only for r)


class RunQuerySet(models.QuerySet):
    def visible_to(self, user):
        """A run is its owner's; staff see everyone's. Anonymous visitors see none."""
        if user is None or not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        return self.filter(owner=user)


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # waiting for a train worker
        PREPARING = "preparing"  # a worker holds it and waits for the corpus to be encoded with the tokenizer
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # `reason` says why
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.PREPARING, Status.RUNNING)
    HELD = (Status.PREPARING, Status.RUNNING)  # a worker holds a lease on it
    STOPPED = (Status.FAILED, Status.CANCELLED)  # may be resumed

    class Kind(models.TextChoices):
        PRETRAIN = "pretrain", "pretraining"
        SFT = "sft", "supervised fine-tuning"
        GRPO = "grpo", "reinforcement learning (GRPO)"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training_runs")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PRETRAIN, db_index=True)
    # the registry model a fine-tuning or RL run starts from (None for pretraining); `corpus` is then the
    # conversation set (sft) or task set (grpo)
    base_model = models.ForeignKey("registry.Model", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="derived_runs")
    preset = models.CharField(max_length=40, blank=True, help_text="the preset the form started from, if any")
    # SET_NULL: deleting a corpus or tokenizer keeps the runs' history (`data` remembers what they were); such a run
    # can no longer be resumed or forked
    corpus = models.ForeignKey("corpora.Corpus", null=True, on_delete=models.SET_NULL, related_name="runs")
    tokenizer = models.ForeignKey("tokenization.Tokenizer", null=True, on_delete=models.SET_NULL, related_name="runs")
    data = models.JSONField(default=dict, blank=True, help_text="corpus and tokenizer names, vocabulary, split sizes")
    # workers.gpt.config.GPTConfig / TrainConfig .to_dict(), validated when the run was created
    model_config = models.JSONField()
    train_config = models.JSONField()

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    reason = models.TextField(blank=True, help_text="why it failed or stopped, in words for the user")
    cancel_requested = models.BooleanField(default=False)

    # progress, as of the last batch of metrics the worker wrote
    step = models.PositiveIntegerField(default=0, help_text="optimizer steps completed")
    train_loss = models.FloatField(null=True, blank=True, help_text="last evaluation on the train split")
    val_loss = models.FloatField(null=True, blank=True, help_text="last evaluation on the val split")
    best_val_loss = models.FloatField(null=True, blank=True)
    latest = models.JSONField(default=dict, blank=True, help_text="the last step's loss, lr, grad norm, speed")
    elapsed_seconds = models.FloatField(default=0.0, help_text="training wall time, summed over every attempt")

    # who runs it: the worker's name and device; a lease the worker renews while it holds the run
    worker = models.CharField(max_length=200, blank=True)
    device = models.JSONField(default=dict, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0, help_text="how many times a worker took the run")
    # bumped whenever metrics past a checkpoint are dropped (a lost worker's run resumes from its last checkpoint),
    # so a page that was watching knows to rebuild its curve instead of appending to it
    epoch = models.PositiveIntegerField(default=0)

    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks")
    forked_from_step = models.PositiveIntegerField(null=True, blank=True)
    # the scaling sweep this run is one point of (apps/training/sweeps.py), if any
    sweep = models.ForeignKey("training.Sweep", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")

    created = models.DateTimeField(auto_now_add=True)
    queued = models.DateTimeField(null=True, blank=True, help_text="when it last entered the queue")
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "preparing", "running", "succeeded", "failed", "cancelled"]),
                name="run_status_valid",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    @property
    def max_steps(self) -> int:
        return self.train_config["max_steps"]

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def directory(self) -> Path:
        return files.artifact_path(run_dir(self.pk))

    @property
    def lora(self) -> dict | None:
        """{"r", "alpha"} of the LoRA adapters a fine-tuning or GRPO run trains (None: full weights), so whatever
        reads its checkpoints (promote, which merges them) knows the scale alpha / r. A GRPO run's alpha is 2 r."""
        if self.kind == self.Kind.SFT:
            lora = (self.data.get("sft") or {}).get("lora")
            return {"r": int(lora["r"]), "alpha": float(lora["alpha"])} if lora else None
        if self.kind == self.Kind.GRPO and self.train_config.get("lora"):
            r = int(self.train_config.get("lora_r", 8))
            return {"r": r, "alpha": float(GRPO_LORA_ALPHA_PER_RANK * r)}
        return None

    @property
    def tokens_per_step(self) -> int:
        return self.train_config["batch_size"] * self.train_config["grad_accum"] * self.model_config["block_size"]


def run_dir(run_id: int) -> str:
    """Where a run's checkpoints live, relative to ARTIFACTS_DIR."""
    return f"runs/{run_id}"


class Metric(models.Model):
    """One optimizer step. (run, step) is unique: a step written twice (a task delivered again) is written once."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    loss = models.FloatField(null=True, help_text="null when the loss was NaN or infinite")
    lr = models.FloatField()
    grad_norm = models.FloatField(null=True)
    ms = models.FloatField(help_text="wall time of the step")
    tokens_per_s = models.FloatField()
    mfu = models.FloatField(null=True, help_text="model FLOPs utilization, 0..1")
    elapsed = models.FloatField(help_text="training seconds since the run first started, at the end of the step")
    # what only some kinds of run measure (grpo: reward, accuracy, reward_std, response_len, kl, entropy)
    extra = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="metric_unique_step")]


class Evaluation(models.Model):
    """A loss estimate on both splits (step 0 is before training), with a sample the model generated then."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="evaluations")
    step = models.PositiveIntegerField()
    train_loss = models.FloatField(null=True)
    val_loss = models.FloatField(null=True)
    elapsed = models.FloatField()
    sample = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="evaluation_unique_step")]


class Checkpoint(models.Model):
    """A checkpoint on disk (safetensors + JSON sidecar). Rotation deletes the file and the row together."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    path = models.CharField(max_length=300, help_text="the .safetensors file, relative to ARTIFACTS_DIR")
    train_loss = models.FloatField(null=True, blank=True)
    val_loss = models.FloatField(null=True, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="checkpoint_unique_step")]

    def __str__(self) -> str:
        return f"run #{self.run_id} step {self.step}"

    @property
    def file(self) -> Path:
        return files.artifact_path(self.path)


class RunEvent(models.Model):
    """The run's timeline: queued, taken by a worker, data ready, cancelled, the worker lost, resumed, finished.

    `message` is the English text; `template` the catalogue msgid it was made from, with `params` for its %(name)s
    placeholders, so that `text` says it in the reader's language (workers write events with no request, hence no
    language, to go by). Words the catalogue lacks (an exception's, rows from before templates) read as written."""

    class Kind(models.TextChoices):
        INFO = "info"
        GOOD = "good"
        WARNING = "warning"
        ERROR = "error"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.INFO)
    step = models.PositiveIntegerField(null=True, blank=True)
    message = models.TextField()
    template = models.TextField(blank=True, help_text="the msgid `message` was made from")
    params = models.JSONField(default=dict, blank=True, help_text="values of the template's %(name)s placeholders")

    class Meta:
        ordering = ["at", "id"]

    @property
    def text(self) -> str:
        from django.utils.translation import gettext

        if not self.template:
            return self.message
        if not self.params:
            return gettext(self.template)
        try:
            return gettext(self.template) % self.params
        except (KeyError, TypeError, ValueError):  # a translation that lost a placeholder: the English still works
            return self.message


class DeviceProfile(models.Model):
    """How fast a kind of device trains: its peak FLOP/s (measured once by a worker, or a GPU's datasheet figure) and
    the model FLOPs utilization runs reached on it. The submit form's time estimates come from here."""

    key = models.CharField(max_length=200, unique=True, help_text="kind, name and cores: one key per kind of machine")
    kind = models.CharField(max_length=10)
    name = models.CharField(max_length=200)
    peak_flops = models.FloatField(null=True, blank=True)
    mfu = models.FloatField(null=True, blank=True, help_text="median MFU of the last runs on this device")
    runs = models.PositiveIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key


class Sweep(models.Model):
    """A scaling sweep: for each compute budget a few model sizes, each trained for as many tokens as spends that
    budget (Chinchilla's iso-FLOP method). Its runs are ordinary pretraining runs (Run.sweep points here), queued,
    resumed and recovered like any other; the sweep only groups them and remembers the plan. `grid` holds one row
    per run (workers.gpt.scaling.GridRow.to_dict() plus "run", the run's id, and "prediction" for the run launched
    to check the fit's forecast); `prediction` holds that forecast: {"budget", "loss", "low", "high", "run"}."""

    class Status(models.TextChoices):
        QUEUED = "queued"  # no run has started yet
        RUNNING = "running"  # some runs are still queued or training
        SUCCEEDED = "succeeded"  # every run finished
        INCOMPLETE = "incomplete"  # every run stopped, some failed or were cancelled (they can be resumed)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training_sweeps")
    name = models.CharField(max_length=100)
    preset = models.CharField(max_length=40, blank=True, help_text="workers.gpt.scaling preset key, if any")
    corpus = models.ForeignKey("corpora.Corpus", null=True, on_delete=models.SET_NULL, related_name="sweeps")
    tokenizer = models.ForeignKey("tokenization.Tokenizer", null=True, on_delete=models.SET_NULL,
                                  related_name="sweeps")
    # the GPTConfig fields besides the shape, and the TrainConfig fields every run shares
    base_config = models.JSONField(default=dict)
    budgets = models.JSONField(default=list, help_text="compute budgets in FLOPs, ascending")
    grid = models.JSONField(default=list)
    prediction = models.JSONField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"sweep #{self.pk} {self.name}"

    def status_of(self, statuses: list[str]) -> str:
        """The sweep's status from its runs' statuses."""
        if not statuses or all(s == Run.Status.QUEUED for s in statuses):
            return self.Status.QUEUED
        if any(s in Run.ACTIVE for s in statuses):
            return self.Status.RUNNING
        if all(s == Run.Status.SUCCEEDED for s in statuses):
            return self.Status.SUCCEEDED
        return self.Status.INCOMPLETE

    @property
    def status(self) -> str:
        return self.status_of(list(self.runs.values_list("status", flat=True)))


class Rollout(models.Model):
    """The sampled groups of one GRPO step, for the dashboard: [{"prompt", "answer", "samples": [{"text", "reward",
    "correct", "length", "truncated"}]}]. Only the last few steps are kept (apps.training.grpo.ROLLOUT_STEPS_KEPT)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="rollouts")
    step = models.PositiveIntegerField()
    groups = models.JSONField(default=list)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="rollout_unique_step")]
