"""Evaluations: one row per job that scores a registry model on a data set, run by an infer worker.

Three methods, after lm-evaluation-harness (the scoring is workers/gpt/evaluate.py):
- loss: mean next-token loss and perplexity on a text corpus's split;
- choice: multiple choice by log-likelihood of each option, on a bundled benchmark (apps/evals/benchmarks.py);
- generate: the model answers each problem of a task set (a tasks-kind corpus, or a generated bundled task) and a
  checker scores it: pass@1, and pass@k when k samples are drawn per problem.

`results` holds the summary the pages and the lineage table read (score, 95 % interval, n, per-metric values);
the per-problem answers are a JSON file under ARTIFACTS_DIR (evals/<id>/answers.json), since a thousand answers of
a few hundred tokens each do not belong in a row the list pages load.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.system import files
from apps.system.models import Job


class Evaluation(Job):
    class Method(models.TextChoices):
        LOSS = "loss", _("loss and perplexity")
        CHOICE = "choice", _("multiple choice (log-likelihood)")
        GENERATE = "generate", _("generate, then check")

    model = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="evaluations")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="evaluations")
    method = models.CharField(max_length=10, choices=Method.choices)
    # the data set: a corpus row (text for loss, tasks for generate) or a bundled benchmark's key (BENCHMARKS)
    corpus = models.ForeignKey("corpora.Corpus", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="evaluations")
    benchmark = models.CharField(max_length=40, blank=True)
    dataset = models.CharField(max_length=120, help_text="the data set's name when the job was made (kept if it goes)")
    # what makes two evaluations comparable in the lineage table: method, data set and split (and k)
    task_key = models.CharField(max_length=120, db_index=True)
    split = models.CharField(max_length=10)
    n = models.PositiveIntegerField(help_text="problems to score (tokens, for loss)")
    k = models.PositiveSmallIntegerField(default=1, help_text="samples per problem (pass@k); 1 is greedy")
    temperature = models.FloatField(default=0.0)
    max_new_tokens = models.PositiveIntegerField(default=64)
    seed = models.PositiveIntegerField(default=0)

    phase = models.CharField(max_length=80, blank=True)
    done = models.PositiveIntegerField(default=0, help_text="problems (or tokens) scored so far")
    worker = models.CharField(max_length=200, blank=True)
    results = models.JSONField(default=dict, blank=True)
    notes = models.JSONField(default=list, blank=True, help_text="what the job changed or left out, in words")
    answers_path = models.CharField(max_length=300, blank=True, help_text="relative to ARTIFACTS_DIR")

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["model", "task_key", "status"])]

    def __str__(self) -> str:
        return f"{self.model} on {self.dataset} ({self.method}, {self.status})"

    @property
    def answers_file(self):
        return files.artifact_path(self.answers_path) if self.answers_path else None

    @property
    def lower_is_better(self) -> bool:
        return self.method == self.Method.LOSS
