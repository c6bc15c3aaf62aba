"""Fixtures for fine-tuning tests: a tiny conversation set in the tiny corpus's characters, and a tiny GPT over
those characters promoted into the registry as ada's draft (a base model to fine-tune)."""

import json

import pytest

from apps.corpora import conversations
from apps.training.models import Run
from workers.gpt.config import GPTConfig

CONVS = [
    [{"role": "user", "content": "Speak."}, {"role": "assistant", "content": "Resolved."}],
    [{"role": "user", "content": "Speak, speak."}, {"role": "assistant", "content": "Resolved. resolved."}],
    [{"role": "system", "content": "Speak."}, {"role": "user", "content": "First?"},
     {"role": "assistant", "content": "All: speak."}],
] * 4


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models gain nothing from more, and on a shared CPU spinning threads slow them down."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def jsonl(convs) -> bytes:
    return "".join(json.dumps({"messages": c}) + "\n" for c in convs).encode()


@pytest.fixture
def chats(user):
    return conversations.conversations_create(name="Tiny chats", data=jsonl(CONVS), owner=user, n_val=3)


@pytest.fixture
def base(user, char_tok):
    """A tiny GPT over the tiny corpus's characters, promoted into the registry as ada's draft."""
    import torch

    from apps.registry.services import model_promote
    from apps.system import files
    from apps.training.models import Checkpoint
    from workers.gpt.checkpoint import save_checkpoint
    from workers.gpt.model import GPT

    cfg = GPTConfig(vocab_size=char_tok.n_vocab, block_size=64, n_layer=1, n_head=2, n_embd=32, bias=False)
    run = Run.objects.create(owner=user, name="tiny base", tokenizer=char_tok, model_config=cfg.to_dict(),
                             train_config={"max_steps": 1, "batch_size": 1, "grad_accum": 1}, status="succeeded",
                             data={"corpus": "Tiny", "tokenizer": char_tok.name}, step=1)
    torch.manual_seed(0)
    path = save_checkpoint(run.directory, model=GPT(cfg), step=1, losses={"val": 3.0})
    ckpt = Checkpoint.objects.create(run=run, step=1, path=files.artifact_relative(path), size_bytes=1)
    model = model_promote(checkpoint=ckpt, user=user, name="tiny")
    # the registry holds its own copy: leave no runs/<id>/ behind for a later test's run that reuses the id
    files.remove(run.directory)
    return model
