"""Users and a finished training run, shared by the registry's test modules."""

import pytest
from django.contrib.auth.models import User

from apps.system import files
from workers.gpt.config import GPTConfig


@pytest.fixture
def staff():
    return User.objects.create_user("staff", password="pw-staff-1234", is_staff=True)


@pytest.fixture
def ada():
    return User.objects.create_user("ada", password="pw-ada-1234")


@pytest.fixture
def bob():
    return User.objects.create_user("bob", password="pw-bob-1234")


@pytest.fixture
def run_checkpoint(ada):
    """A finished training run of ada's with one checkpoint on disk (weights + AdamW state), GPT-2 tokenizer."""
    import torch

    from apps.tokenization.models import Tokenizer
    from apps.training.models import Checkpoint, Run
    from workers.gpt.checkpoint import save_checkpoint
    from workers.gpt.model import GPT

    tokenizer = Tokenizer.objects.create(name="gpt2", kind="tiktoken", builtin=True, status="succeeded",
                                         special_tokens=["<|endoftext|>"], n_vocab=50257)
    cfg = GPTConfig(vocab_size=50304, block_size=16, n_layer=1, n_head=2, n_embd=16)
    run = Run.objects.create(owner=ada, name="tiny run", tokenizer=tokenizer, model_config=cfg.to_dict(),
                             train_config={"max_steps": 10, "batch_size": 1, "grad_accum": 1}, status="succeeded",
                             data={"corpus": "Shakespeare", "tokenizer": "gpt2"}, step=10, val_loss=2.5)
    torch.manual_seed(0)
    model = GPT(cfg)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.tensor([[1, 2, 3]]), targets=torch.tensor([[2, 3, 4]]))[1].backward()
    optimizer.step()
    path = save_checkpoint(run.directory, model=model, step=10, optimizer=optimizer, losses={"val": 2.5},
                           tokenizer={"id": tokenizer.pk, "name": "gpt2"})
    ckpt = Checkpoint.objects.create(run=run, step=10, path=files.artifact_relative(path), val_loss=2.5,
                                     size_bytes=path.stat().st_size)
    return ckpt, model
