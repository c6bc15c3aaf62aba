"""Fixtures for the training app, its glue and its browser tests: a tiny corpus encoded with a character tokenizer,
tiny model configs (a few dozen steps train in well under a second), and helpers to make runs."""

import pytest

from apps.corpora import services as corpora_services
from apps.system.models import JobStatus
from apps.tokenization import services as tokenization_services
from apps.training import services
from apps.training.models import Run
from tests.data_fixtures import *  # noqa: F401,F403  (user, other_user, staff, tiny_corpus, ...)
from tests.data_fixtures import TINY_TEXT
from workers.gpt.config import GPTConfig, TrainConfig

TINY_MODEL = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, bias=False)
TINY_TRAIN = dict(batch_size=4, max_steps=30, learning_rate=1e-2, min_lr=1e-3, warmup_steps=2, eval_interval=10,
                  eval_iters=2, checkpoint_interval=10, keep_last=2, device="cpu", seed=7)


def train_worker(processes, name):
    """A real train worker (the launcher's command line) with one torch thread: tiny models gain nothing from more,
    and on a CPU shared with other tests, threads spin-waiting for a busy core make steps ten times slower."""
    from apps.system.management.commands.lab import worker_command

    cmd = worker_command("train")
    cmd[cmd.index("-n") + 1] = name
    return processes.start(name.replace("@", "-"), cmd, OMP_NUM_THREADS="1")


def encode_here(corpus, tokenizer):
    """The corpus encoded with the tokenizer, in this process (the real job's glue, without a worker)."""
    from workers.corpora import corpus_encode

    shards = corpora_services.shards_ensure(corpus_id=corpus.pk, tokenizer_id=tokenizer.pk)
    if shards.status != JobStatus.SUCCEEDED:
        assert corpus_encode(shards_id=shards.pk) == "succeeded"
        shards.refresh_from_db()
    return shards


@pytest.fixture
def char_tok(tiny_corpus):
    return tokenization_services.tokenizer_char_create(corpus=tiny_corpus, name="tiny-char")


@pytest.fixture
def encoded(tiny_corpus, char_tok):
    return encode_here(tiny_corpus, char_tok)


@pytest.fixture
def shakespeare(user):
    """The bundled Shakespeare corpus, its character tokenizer, and the two encoded (for the benchmarks)."""
    corpus = {c.name: c for c in corpora_services.corpus_seed_defaults()}["Shakespeare"]
    tokenizer = next(t for t in tokenization_services.tokenizer_seed_defaults(shakespeare=corpus)
                     if t.name == "shakespeare-char")
    return corpus, tokenizer, encode_here(corpus, tokenizer)


def model_config(char_tok, **changes) -> dict:
    return GPTConfig(vocab_size=char_tok.n_vocab, **{**TINY_MODEL, **changes}).to_dict()


def train_config(**changes) -> dict:
    return TrainConfig(**{**TINY_TRAIN, **changes}).to_dict()


def make_run(owner, corpus, tokenizer, *, enqueue=False, model=None, **train_changes) -> Run:
    return services.run_create(
        owner=owner, corpus=corpus, tokenizer=tokenizer, model_config=model or model_config(tokenizer),
        train_config=train_config(**train_changes), name="tiny", enqueue=enqueue)


@pytest.fixture
def run(user, tiny_corpus, char_tok):
    return make_run(user, tiny_corpus, char_tok)


def form_data(corpus, tokenizer, **changes) -> dict:
    """What the submit form posts for the tiny run (unchecked boxes absent)."""
    data = {"corpus": corpus.pk, "tokenizer": tokenizer.pk, "name": "", "preset": ""}
    data |= {k: v for k, v in {**TINY_MODEL, **TINY_TRAIN}.items() if v is not False}
    data |= {"grad_accum": 1, "weight_decay": 0.1, "grad_clip": 1.0, "beta1": 0.9, "beta2": 0.95, "dtype": "auto"}
    return {k: v for k, v in (data | changes).items() if v is not None}


__all__ = ["TINY_MODEL", "TINY_TRAIN", "TINY_TEXT", "train_worker", "encode_here", "char_tok", "encoded",
           "shakespeare", "model_config", "train_config", "make_run", "run", "form_data"]
