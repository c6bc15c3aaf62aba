"""Tiny models and task sets for the GRPO tests: a character-level GPT in the registry (random weights, a context
long enough for an arithmetic prompt) and a generated arithmetic task set. Import with `from tests.grpo_fixtures
import *` beside tests.data_fixtures."""

import string
from pathlib import Path

import pytest
import torch
from django.conf import settings

from apps.corpora import tasksets
from apps.tokenization.models import Tokenizer
from workers.gpt import tokenizers as toklib
from workers.gpt.checkpoint import save_checkpoint
from workers.gpt.config import GPTConfig
from workers.gpt.model import GPT

ALPHABET = "".join(sorted(set(string.printable) - set("\x0b\x0c\r")))
TINY_GRPO = dict(vocab_size=len(ALPHABET), block_size=256, n_layer=1, n_head=2, n_embd=16)


def tiny_registry_model(*, owner, name: str, status: str = "published", block_size: int = 256):
    """A registry model: a 1-layer character GPT with random weights; its stop id is the newline."""
    from apps.registry.models import Model

    tok_name = f"grpo-char-{name}"
    tok = toklib.CharTokenizer(ALPHABET, name=tok_name)
    relative = f"tokenizers/char-{tok_name}.json"
    path = Path(settings.ARTIFACTS_DIR) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_json(), encoding="utf-8")
    tok_row = Tokenizer.objects.create(name=tok_name, kind=Tokenizer.Kind.CHAR, n_vocab=tok.n_vocab,
                                       status="succeeded", path=relative)
    config = GPTConfig(**{**TINY_GRPO, "block_size": block_size})
    torch.manual_seed(0)
    weights = save_checkpoint(Path(settings.ARTIFACTS_DIR) / "models" / f"tiny-{name}", model=GPT(config), step=0,
                              tokenizer={"name": tok_name})
    return Model.objects.create(
        name=name, slug=name, architecture="gpt2", config=config.to_dict(), n_params=1, tokenizer=tok_row,
        tokenizer_spec={"kind": "char", "name": tok_name, "path": relative, "fingerprint": ""},
        path=str(weights.relative_to(settings.ARTIFACTS_DIR)), size_bytes=weights.stat().st_size,
        sha256=f"{abs(hash(name)):064x}"[:64], source="imported", stop_ids=[ALPHABET.index("\n")], status=status,
        owner=owner)


@pytest.fixture
def tiny_model(user):
    return tiny_registry_model(owner=user, name="tiny-chat")


@pytest.fixture
def arithmetic_set(user):
    return tasksets.taskset_generate(owner=user, name="Sums", task="arithmetic", difficulty=1, seed=0, n_train=40,
                                     n_heldout=8)
