"""What an import produces, and the checks every reader runs before anything is written. numpy only."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigError, GPTConfig
from ..tokenizers import ENDOFTEXT, ImportedTokenizer, TokenizerError
from ..tokenizers import describe as describe_builtin


class ImportRefused(ValueError):
    """A file cannot be imported; the message says why and, where there is one, what to do instead."""


@contextmanager
def tokenizer_refusals():
    """Turn a tokenizer that cannot be built from a file (a TokenizerError, already in words) into ImportRefused."""
    try:
        yield
    except TokenizerError as e:
        raise ImportRefused(str(e)) from None


@dataclass
class Imported:
    """A model read from an outside format, in our names and layout (model.py), ready for llmlab.write_checkpoint."""
    config: GPTConfig
    state: dict[str, np.ndarray]  # our parameter names -> float32 arrays; a tied lm_head is not listed
    tokenizer: ImportedTokenizer | None
    source: dict = field(default_factory=dict)  # format, file name, architecture, name from the file's metadata...
    notes: list[str] = field(default_factory=list)  # things a user should know (approximations, dropped pieces)
    builtin_tokenizer: str | None = None  # a built-in encoding (tokenizers.BUILTIN_NAMES) when no tokenizer came along

    @property
    def chat_template(self) -> str | None:
        return self.tokenizer.chat_template if self.tokenizer is not None else None

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a generation: the end-of-sequence token and, where present, <|endoftext|>."""
        ids = []
        if self.builtin_tokenizer is not None:
            ids.append(describe_builtin(self.builtin_tokenizer)["special_tokens"][ENDOFTEXT])
        if self.tokenizer is not None:
            if self.tokenizer.eos_id is not None:
                ids.append(self.tokenizer.eos_id)
            eot = self.tokenizer.special_tokens.get("<|endoftext|>")
            if eot is not None and eot not in ids:
                ids.append(eot)
        return ids


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter GPT(cfg) has, by our name, with its shape (lm_head only when untied)."""
    C, V, I, hs = cfg.n_embd, cfg.vocab_size, cfg.intermediate_size, cfg.head_size
    qkv = (cfg.n_head + 2 * cfg.n_kv_head) * hs
    shapes = {"transformer.wte.weight": (V, C), "transformer.ln_f.weight": (C,)}
    if cfg.pos == "learned":
        shapes["transformer.wpe.weight"] = (cfg.block_size, C)
    layernorm_bias = cfg.norm == "layernorm" and cfg.bias
    if layernorm_bias:
        shapes["transformer.ln_f.bias"] = (C,)
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        linears = {"attn.c_attn": (qkv, C), "attn.c_proj": (C, C), "mlp.c_fc": (I, C), "mlp.c_proj": (C, I)}
        if cfg.mlp == "swiglu":
            linears["mlp.c_gate"] = (I, C)
        for name, shape in linears.items():
            shapes[p + name + ".weight"] = shape
            if cfg.bias:
                shapes[p + name + ".bias"] = (shape[0],)
        for norm in ("ln_1", "ln_2"):
            shapes[p + norm + ".weight"] = (C,)
            if layernorm_bias:
                shapes[p + norm + ".bias"] = (C,)
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def check_state(cfg: GPTConfig, state: dict[str, np.ndarray], *, source: str) -> None:
    """Refuse a state dict that does not fit cfg exactly: a missing, extra or misshapen tensor, or a NaN/inf."""
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in state]
    if missing:
        raise ImportRefused(f"{source}: {len(missing)} tensor(s) missing, e.g. {missing[0]} (is the file "
                            f"truncated, or not the model its config describes?)")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ImportRefused(f"{source}: unexpected tensor {extra[0]} for this configuration")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ImportRefused(f"{source}: {name} has shape {tuple(state[name].shape)}, the config needs {shape}")
        if not np.isfinite(state[name]).all():
            raise ImportRefused(f"{source}: {name} holds NaN or infinite values: the file is corrupt")


def make_config(source: str, **kwargs) -> GPTConfig:
    try:
        return GPTConfig(**kwargs)
    except ConfigError as e:
        raise ImportRefused(f"{source}: the model's configuration does not fit LLM Lab's GPT: {e}") from None

