"""Tiny models for the explorer's tests: a character tokenizer row, and a training run whose checkpoints are real
safetensors files of a 2-layer GPT (random weights, one seed per step, so each checkpoint attends differently)."""

from pathlib import Path

import torch
from django.conf import settings
from django.contrib.auth.models import User

from apps.tokenization.models import Tokenizer
from apps.training.models import Checkpoint, Run, run_dir
from workers.gpt import tokenizers as toklib
from workers.gpt.checkpoint import save_checkpoint
from workers.gpt.config import GPTConfig, TrainConfig
from workers.gpt.model import GPT

ALPHABET = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TINY = dict(vocab_size=len(ALPHABET), block_size=32, n_layer=2, n_head=2, n_embd=16)


def char_tokenizer(name: str = "explorer-char") -> Tokenizer:
    tok = toklib.CharTokenizer(ALPHABET, name=name)
    relative = f"tokenizers/char-{name}.json"
    path = Path(settings.ARTIFACTS_DIR) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_json(), encoding="utf-8")
    return Tokenizer.objects.create(name=name, kind=Tokenizer.Kind.CHAR, n_vocab=tok.n_vocab, status="succeeded",
                                    path=relative)


def tiny_run(*, owner: User, tokenizer: Tokenizer, steps=(0, 100, 200), name: str = "tiny", **cfg) -> tuple[Run, list[Checkpoint]]:
    config = GPTConfig(**{**TINY, **cfg})
    run = Run.objects.create(owner=owner, name=name, tokenizer=tokenizer, model_config=config.to_dict(),
                             train_config=TrainConfig(max_steps=max(steps) or 1).to_dict(), status="succeeded",
                             step=max(steps))
    checkpoints = []
    for k, step in enumerate(steps):
        torch.manual_seed(1000 + step)
        model = GPT(config)
        with torch.no_grad():  # sharper attention than the init, so checkpoints differ visibly
            for p in model.parameters():
                p.mul_(3.0)
        path = save_checkpoint(Path(settings.ARTIFACTS_DIR) / run_dir(run.pk), model=model, step=step,
                               tokenizer={"id": tokenizer.pk, "name": tokenizer.name})
        checkpoints.append(Checkpoint.objects.create(
            run=run, step=step, path=str(path.relative_to(settings.ARTIFACTS_DIR)), val_loss=4.0 - k * 0.5,
            size_bytes=path.stat().st_size))
    return run, checkpoints


def registry_model(*, checkpoint: Checkpoint, tokenizer: Tokenizer, status: str = "published", name: str = "tiny-published"):
    """A model in the registry made from a run's checkpoint, as promotion would (the weights file is shared here)."""
    from apps.registry.models import Model

    run = checkpoint.run
    return Model.objects.create(
        name=name, slug=name, architecture="gpt2", config=run.model_config, n_params=1, tokenizer=tokenizer,
        tokenizer_spec={"kind": tokenizer.kind, "name": tokenizer.name, "path": tokenizer.path, "fingerprint": ""},
        path=checkpoint.path, size_bytes=checkpoint.size_bytes, sha256=f"{checkpoint.pk:064x}", source="run", run=run,
        checkpoint=checkpoint, step=checkpoint.step, val_loss=checkpoint.val_loss, status=status)
