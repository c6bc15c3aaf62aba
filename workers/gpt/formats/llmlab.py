"""OUR checkpoint format, spelled once: file names, the JSON sidecar, and a numpy writer and reader of it.

A checkpoint is two files in a directory (any number of checkpoints per directory):

    ckpt-000100.safetensors   model weights ("model.<name>") and AdamW state ("optim.<param index>.<key>")
    ckpt-000100.json          the sidecar: configs, step, losses, tokenizer, data position, RNG states, optimizer
                              hyperparameters, aliases of tied weights, extra (source, notes, stop ids, chat template)
    tokenizer/                (an imported model only) its byte-level BPE, tokenizers.save_imported's format

The JSON is written last and is the commit mark: a checkpoint exists when its JSON does. workers/gpt/checkpoint.py
(the torch side: training saves, inference loads) takes every name from here; write_checkpoint and read_checkpoint
below are the same format with numpy, for importers and exporters that must not need torch.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from ..config import GPTConfig
from ..fileio import atomic_write_bytes
from ..tokenizers import save_imported
from .imported import Imported, ImportRefused
from .safetensors import read_safetensors, write_safetensors

FORMAT = "llmlab-gpt-checkpoint"
VERSION = 1
SIDECAR_NAME = re.compile(r"^ckpt-(\d+)\.json$")
TOKENIZER_DIR = "tokenizer"  # next to an imported model's checkpoint


def checkpoint_path(directory, step: int) -> Path:
    """The weights file of `step` in `directory`; its sidecar is sidecar_path() of it."""
    return Path(directory) / f"ckpt-{step:06d}.safetensors"


def sidecar_path(path) -> Path:
    return Path(path).with_suffix(".json")


def tensor_metadata(step: int) -> dict[str, str]:
    """What the .safetensors header's __metadata__ records (safetensors allows only strings)."""
    return {"format": FORMAT, "step": str(step)}


def make_sidecar(*, step: int, model_config: dict, train_config: dict | None = None, tokenizer=None,
                 losses: dict | None = None, data_position=None, rng_state: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None, optimizer: dict | None = None,
                 extra: dict | None = None) -> dict:
    """The sidecar's JSON, every field present. rng_state holds base64 strings; aliases map a tied weight's name to
    the one stored ({"model.lm_head.weight": "model.transformer.wte.weight"}); optimizer is checkpoint.py's
    flattened AdamW state without its tensors, or None."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "created_at": time.time(),
        "model_config": model_config,
        "train_config": train_config,
        "tokenizer": tokenizer,
        "losses": losses or {},
        "data_position": data_position,
        "rng_state": rng_state or {},
        "aliases": aliases or {},
        "optimizer": optimizer,
        "extra": extra or {},
    }


def write_sidecar(path, meta: dict) -> Path:
    """Write the sidecar of the checkpoint whose weights are `path`, atomically: after this the checkpoint exists."""
    return atomic_write_bytes(sidecar_path(path), json.dumps(meta, indent=1).encode())


def is_sidecar(meta: dict) -> bool:
    return meta.get("format") == FORMAT and meta.get("version") == VERSION


# ----------------------------------------------------------------------------------------------------------------------
# the same format with numpy (no torch): what importers write and exporters read


def write_checkpoint(imported: Imported, directory: str | Path, *, step: int = 0, tokenizer_spec=None,
                     extra: dict | None = None) -> Path:
    """Write the weights and sidecar (ckpt-NNNNNN.safetensors + .json) into directory, and the tokenizer (if the
    import brought one) into directory/tokenizer/. Returns the .safetensors path.

    tokenizer_spec is what the sidecar records as the tokenizer; by default {"kind": "imported", "dir": "tokenizer"}
    (relative to the checkpoint's directory) when the import brought a tokenizer, else the built-in encoding's name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if imported.tokenizer is not None:
        save_imported(imported.tokenizer, directory / TOKENIZER_DIR)
        if tokenizer_spec is None:
            tokenizer_spec = {"kind": "imported", "dir": TOKENIZER_DIR, "name": imported.tokenizer.name}
    elif tokenizer_spec is None:
        tokenizer_spec = imported.builtin_tokenizer
    path = checkpoint_path(directory, step)
    tensors = {f"model.{k}": v for k, v in imported.state.items()}
    aliases = {"model.lm_head.weight": "model.transformer.wte.weight"} if imported.config.tie_embeddings else {}
    write_safetensors(path, tensors, metadata=tensor_metadata(step))
    write_sidecar(path, make_sidecar(
        step=step, model_config=imported.config.to_dict(), tokenizer=tokenizer_spec, aliases=aliases,
        extra={"source": imported.source, "notes": imported.notes, "stop_ids": imported.stop_ids,
               "chat_template": imported.chat_template, **(extra or {})}))
    return path


def read_checkpoint(path: str | Path) -> tuple[GPTConfig, dict[str, np.ndarray], dict]:
    """A checkpoint's config, model weights (float32, our names, tied lm_head left out) and sidecar, with numpy."""
    path = Path(path).with_suffix(".safetensors")
    try:
        meta = json.loads(sidecar_path(path).read_text())
    except FileNotFoundError:
        raise ImportRefused(f"{sidecar_path(path).name} is missing: not a complete checkpoint") from None
    if meta.get("format") != FORMAT:
        raise ImportRefused(f"{path.name} is not an LLM Lab checkpoint")
    cfg = GPTConfig.from_dict(meta["model_config"])
    tensors, _ = read_safetensors(path)
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    return cfg, state, meta
