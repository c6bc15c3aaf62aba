"""Celery tasks: thin, they take ids and call the glue modules. Importing this module must not import torch.

Routing (config/celery.py): tasks named run_* go to the `train` queue, all others to `infer`.
"""

from celery import shared_task

from workers import heartbeat  # noqa: F401  (connects the worker's heartbeat signals)
from workers import recovery  # noqa: F401  (train workers re-queue runs whose worker died; see the module)

# Every training task (name run_*, queue `train`) is declared with these: the message is acknowledged only when the
# task ends, and a worker killed mid-run (SIGKILL, reboot) hands it back to the queue for another worker.
TRAIN_TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True}


# Data and tokenizers (queue `infer`: the names do not start with run_). Each returns the job's final status; the
# glue records failures on the row, where the page shows them.


@shared_task
def corpus_encode(shards_id: int) -> str:
    """Encode a corpus into train/val token shards (apps.corpora.services.shards_ensure queues it)."""
    from workers.corpora import corpus_encode as encode

    return encode(shards_id=shards_id)


@shared_task
def tokenizer_train(tokenizer_id: int) -> str:
    """Train a byte-level BPE tokenizer on a corpus (apps.tokenization.services.tokenizer_train_create queues it)."""
    from workers.tokenization import tokenizer_train as train

    return train(tokenizer_id=tokenizer_id)


# The explorer (queue `infer`).


@shared_task
def trace_compute(trace_id: int) -> str:
    """One forward pass with everything the explorer draws (apps.explorer.services.trace_request queues it)."""
    from workers.explorer import trace_compute as compute

    return compute(trace_id=trace_id)


# Training (queue `train`: the names start with run_).


@shared_task(bind=True, **TRAIN_TASK_OPTIONS)
def run_train(self, run_id: int) -> str:
    """Train a run from the queue, or continue it from its last checkpoint (apps.training.services queues it; a
    second delivery of the same message finds the run finished or held by a live worker and does nothing)."""
    from workers.training import train_run

    return train_run(run_id, worker=self.request.hostname or "train", task_id=self.request.id or "")


# Models and generation (queue `infer`).


@shared_task(bind=True)
def completion_stream(self, generation_id: int) -> str:
    """Stream one generation's tokens to its group (apps.inference.services.generation_start queues it)."""
    from workers.inference import completion_stream as stream

    return stream(generation_id=generation_id, worker=self.request.hostname or "infer")


@shared_task
def model_import(import_id: int) -> str:
    """Convert a GGUF file or a Hugging Face directory into a registry model (apps.registry.services queues it)."""
    from apps.registry.services import model_import_run

    job = model_import_run(import_id=import_id)
    return job.status if job is not None else "skipped"


@shared_task
def model_export(export_id: int) -> str:
    """Write a registry model as a zipped Hugging Face directory (apps.registry.services.model_export_create queues
    it)."""
    from apps.registry.services import model_export_run

    job = model_export_run(export_id=export_id)
    return job.status if job is not None else "skipped"


# Evaluation (queue `infer`: it shares the warm model cache with generation).


@shared_task
def evaluation_run(evaluation_id: int) -> str:
    """Score a model on a data set (apps.evals.services.evaluation_create queues it)."""
    from workers.evals import evaluation_run as run

    return run(evaluation_id=evaluation_id)
