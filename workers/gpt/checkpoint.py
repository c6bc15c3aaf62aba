"""
Checkpoints as safetensors plus a JSON sidecar; never pickle, so loading a checkpoint cannot run code.

A checkpoint directory holds any number of checkpoints, each two files:

    ckpt-000100.safetensors   model weights ("model.<name>") and AdamW state ("optim.<param index>.<key>")
    ckpt-000100.json          configs, step, losses, tokenizer, data position, RNG states, optimizer hyperparameters

Both are written under temporary names, fsynced and renamed into place; the JSON goes last and is the commit mark:
a checkpoint exists when its JSON does. A crash mid-save leaves at most a stray temporary file, never a checkpoint
that loads half-written. The format's names and the sidecar's fields are spelled once, in formats/llmlab.py.
"""

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import GPTConfig, TrainConfig
from .fileio import atomic_write
from .formats.llmlab import (FORMAT, SIDECAR_NAME, VERSION, checkpoint_path, is_sidecar, make_sidecar, sidecar_path,
                             tensor_metadata, write_sidecar)
from .model import GPT, rope_cache

__all__ = ["FORMAT", "VERSION", "Checkpoint", "checkpoint_path", "save_checkpoint", "save_train_state",
           "load_checkpoint", "load_model", "list_checkpoints", "rotate_checkpoints"]


@dataclass
class Checkpoint:
    """A loaded checkpoint. model_state and optimizer_state are ready for load_state_dict()."""
    path: Path  # the .safetensors file
    model_cfg: GPTConfig
    step: int
    model_state: dict[str, torch.Tensor]
    train_cfg: TrainConfig | None = None
    optimizer_state: dict | None = None
    tokenizer: dict | str | None = None
    losses: dict = field(default_factory=dict)  # e.g. {"train": 2.1, "val": 2.3}
    data_position: dict | int | None = None
    rng_state: dict[str, bytes] = field(default_factory=dict)  # name -> torch RNG state bytes
    extra: dict = field(default_factory=dict)
    created_at: float = 0.0

    def build_model(self, device="cpu") -> GPT:
        model = GPT(self.model_cfg)
        model.load_state_dict(self.model_state)
        return model.to(device)


def save_checkpoint(directory, *, model: GPT, step: int, optimizer: torch.optim.Optimizer | None = None,
                    train_cfg: TrainConfig | None = None, tokenizer=None, losses: dict | None = None,
                    data_position=None, rng_state: dict[str, bytes] | None = None, extra: dict | None = None) -> Path:
    """Write model (+ optimizer) tensors and the JSON sidecar for `step` into `directory`, atomically.
    `tokenizer` is whatever JSON identifies it (a name, an id, a dict). Returns the .safetensors path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)

    state = model.state_dict()
    tensors, aliases = _dedupe({f"model.{k}": v for k, v in state.items()})
    optimizer_meta = None
    if optimizer is not None:
        opt_tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    meta = make_sidecar(
        step=step, model_config=model.config.to_dict(),
        train_config=train_cfg.to_dict() if train_cfg is not None else None, tokenizer=tokenizer, losses=losses,
        data_position=data_position,
        rng_state={k: base64.b64encode(v).decode("ascii") for k, v in (rng_state or {}).items()},
        aliases=aliases,  # tied weights are stored once: {"model.lm_head.weight": "model.transformer.wte.weight"}
        optimizer=optimizer_meta, extra=extra)

    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=tensor_metadata(step)))
    write_sidecar(path, meta)
    return path


def save_train_state(directory, state, *, tokenizer=None, data_position=None, extra=None) -> Path:
    """save_checkpoint() for a train.TrainState, as handed to on_checkpoint or returned by train()."""
    return save_checkpoint(
        directory, model=state.model, step=state.step, optimizer=state.optimizer, train_cfg=state.train_cfg,
        tokenizer=tokenizer,
        losses={"loss": state.loss, "train": state.train_loss, "val": state.val_loss, "best_val": state.best_val_loss},
        data_position=data_position, rng_state=state.rng_state, extra=extra,
    )


def load_checkpoint(path, device="cpu", *, with_optimizer: bool = True) -> Checkpoint:
    """Load a checkpoint from its .safetensors or .json path, or from a directory (its latest checkpoint).
    Tensors go to `device`; with_optimizer=False skips the AdamW state (inference needs only the weights)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {path}: a checkpoint is a ckpt-NNNNNN.json + .safetensors pair")
        path = found[-1]
    path = path.with_suffix(".safetensors")
    sidecar = sidecar_path(path)
    if not path.exists() and not sidecar.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not sidecar.exists():
        raise FileNotFoundError(f"{sidecar} is missing: {path.name} was never completely saved, use an earlier one")
    meta = json.loads(sidecar.read_text())
    if not is_sidecar(meta):
        raise ValueError(f"{sidecar} is not a version {VERSION} {FORMAT} sidecar")

    model_state, opt_tensors = {}, {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        for key in f.keys():
            if key.startswith("model."):
                model_state[key] = f.get_tensor(key)
            elif with_optimizer and key.startswith("optim."):
                opt_tensors[key] = f.get_tensor(key)
    for alias, target in meta["aliases"].items():
        model_state[alias] = model_state[target]
    model_state = {k.removeprefix("model."): v for k, v in model_state.items()}

    optimizer_state = None
    if with_optimizer and meta["optimizer"] is not None:
        optimizer_state = _unflatten_optimizer(opt_tensors, meta["optimizer"])
    return Checkpoint(
        path=path,
        model_cfg=GPTConfig.from_dict(meta["model_config"]),
        train_cfg=TrainConfig.from_dict(meta["train_config"]) if meta["train_config"] is not None else None,
        step=meta["step"],
        model_state=model_state,
        optimizer_state=optimizer_state,
        tokenizer=meta["tokenizer"],
        losses=meta["losses"],
        data_position=meta["data_position"],
        rng_state={k: base64.b64decode(v) for k, v in meta["rng_state"].items()},
        extra=meta["extra"],
        created_at=meta["created_at"],
    )


def load_model(path, device="cpu") -> GPT:
    """Just the model from a checkpoint, in eval mode: what inference needs.

    Without the random initialisation that GPT(cfg) does: the model is built on the meta device and adopts the
    checkpoint's tensors (for SmolLM2 this skips initialising 134M parameters only to overwrite them)."""
    ckpt = load_checkpoint(path, device, with_optimizer=False)
    cfg = ckpt.model_cfg
    with torch.device("meta"):
        model = GPT(cfg)
    model.load_state_dict(ckpt.model_state, assign=True, strict=True)
    if cfg.pos == "rope":  # non-persistent buffers: computed from the config, not stored
        cos, sin = rope_cache(cfg)
        model.register_buffer("rope_cos", cos.to(device), persistent=False)
        model.register_buffer("rope_sin", sin.to(device), persistent=False)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.transformer.wte.weight
    return model.eval()


def list_checkpoints(directory) -> list[Path]:
    """Complete checkpoints in `directory` (those whose JSON sidecar exists), oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = sorted(int(m.group(1)) for p in directory.iterdir() if (m := SIDECAR_NAME.match(p.name)))
    return [checkpoint_path(directory, s) for s in steps]


def rotate_checkpoints(directory, keep_last: int, best_by_val: bool = True) -> list[Path]:
    """Delete all checkpoints but the newest keep_last and, with best_by_val, the one with the lowest val loss.
    Returns the deleted .safetensors paths."""
    found = list_checkpoints(directory)
    keep = set(found[-keep_last:]) if keep_last > 0 else set()
    if best_by_val:
        scored = [(v, p) for p in found if (v := _val_loss(p)) is not None]
        if scored:
            keep.add(min(scored)[1])  # on a tie, the earlier checkpoint
    removed = []
    for p in found:
        if p not in keep:
            sidecar_path(p).unlink()  # the sidecar first: from here on the checkpoint no longer exists
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# -----------------------------------------------------------------------------
# helpers


def _val_loss(path: Path) -> float | None:
    try:
        val = json.loads(sidecar_path(path).read_text())["losses"].get("val")
    except (OSError, ValueError, KeyError):
        return None
    return float(val) if val is not None else None


def _dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses tensors that share memory (tied weights): keep the first name, record the others."""
    out, aliases, seen = {}, {}, {}
    for name, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            out[name] = t.detach().contiguous()
    return out, aliases


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer.state_dict() -> tensors named optim.<param index>.<key>, plus the JSON-able rest."""
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])  # JSON turned the tuple into a list
        groups.append(g)
    return {"state": state, "param_groups": groups}
