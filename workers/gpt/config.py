"""
Model and training configuration for the GPT in model.py.

This module imports no torch (only the standard library), so every process can read, validate and size a
configuration: the web process checks a form with it, and the worker builds the model from it. That is the same
reason litgpt keeps its config.py torch-free.

The default GPTConfig is GPT-2 small (124M) as in nanoGPT. A Llama-style block is selected by the block-style fields
of the same config (norm="rmsnorm", pos="rope", mlp="swiglu", n_kv_head < n_head, bias=False), not by another class.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
MLPS = ("gelu", "swiglu")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration value is invalid. `field` names the offending field; the message says how to fix it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class _ConfigMixin:
    """to_dict/from_dict and type checking, shared by the two configs."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            listed = ", ".join(repr(k) for k in unknown)
            raise ConfigError(
                unknown[0], f"unknown {cls.__name__} field(s): {listed}; known fields are: {', '.join(names)}")
        return cls(**data)

    def _check_types(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = hints[f.name]
            allowed = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
            if value is None and type(None) in allowed:
                continue
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # JSON and forms write 1e-3 as 0.001 but 1.0 as 1: accept ints for floats
                setattr(self, f.name, value)
            # bool is a subclass of int: n_layer=True is a mistake, not 1
            ok = any(type(value) is t for t in allowed if t is not type(None))
            if not ok:
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise ConfigError(f.name, f"{f.name} must be {names}, got {type(value).__name__} {value!r}")


def _choice(name: str, value: str, options: tuple[str, ...]):
    if value not in options:
        raise ConfigError(name, f"{name}={value!r} is not one of {', '.join(repr(o) for o in options)}")


def share_error(batch_size: int, grad_accum: int, devices: int) -> str:
    """Why the global batch cannot be shared among `devices` processes, with the values that would work."""
    fits = [n for n in range(1, 65) if grad_accum % n == 0 or batch_size % n == 0]
    return (f"the global batch (batch_size {batch_size} x grad_accum {grad_accum}) cannot be shared among {devices} "
            f"devices: every device needs a whole share, so grad_accum or batch_size must be divisible by devices; "
            f"devices can be {', '.join(map(str, fits))} here, or make grad_accum {devices * grad_accum}")


def _at_least(name: str, value, low, hint: str = ""):
    if value < low:
        raise ConfigError(name, f"{name} ({value}) must be >= {low}" + (f": {hint}" if hint else ""))


@dataclass
class GPTConfig(_ConfigMixin):
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for efficiency
    block_size: int = 1024  # context length: the most tokens the model attends over
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # 0.0 for pretraining, try 0.1+ for finetuning or small data
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit better and faster
    # block style: the defaults are GPT-2; rmsnorm + rope + swiglu + n_kv_head < n_head + bias=False is Llama
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    pos: str = "learned"  # "learned" (absolute position embeddings) | "rope" (rotary, applied to q and k)
    mlp: str = "gelu"  # "gelu" (Linear-GELU-Linear) | "swiglu" (gated, as in Llama)
    n_kv_head: int | None = None  # key/value heads for grouped-query attention; None = n_head (plain multi-head)
    rope_theta: float = 10000.0  # RoPE base frequency; only used with pos="rope"
    norm_eps: float = 1e-5
    intermediate_size: int | None = None  # MLP hidden width; None = 4*n_embd (gelu) or ~8/3*n_embd (swiglu)
    tie_embeddings: bool = True  # share the token embedding with the output head (GPT-2 does, saves V*C params)

    def __post_init__(self):
        self.validate()

    @property
    def head_size(self) -> int:
        # a property rather than a field set in __post_init__, so it cannot go stale if n_embd or n_head change
        return self.n_embd // self.n_head

    def validate(self):
        """Check every field; raise ConfigError naming the first bad one. Fills n_kv_head and intermediate_size."""
        self._check_types()
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _at_least(name, getattr(self, name), 1)
        if self.n_embd % self.n_head:
            # suggest multiples of 2*n_head: they divide evenly and give an even head_size, which RoPE needs
            step = 2 * self.n_head
            lower, upper = (self.n_embd // step) * step, (self.n_embd // step + 1) * step
            tries = f"n_embd={lower} or {upper}" if lower else f"n_embd={upper}"
            raise ConfigError(
                "n_embd", f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): try {tries}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"dropout ({self.dropout}) must be in [0, 1): try 0.0 or 0.1")
        _choice("norm", self.norm, NORMS)
        _choice("pos", self.pos, POSITIONS)
        _choice("mlp", self.mlp, MLPS)
        if self.pos == "rope" and self.head_size % 2:
            step = 2 * self.n_head
            raise ConfigError(
                "n_embd",
                f"pos='rope' needs an even head_size, but n_embd/n_head = {self.n_embd}/{self.n_head} = "
                f"{self.head_size}: try n_embd={(self.n_embd // step + 1) * step}",
            )
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if not 1 <= self.n_kv_head <= self.n_head or self.n_head % self.n_kv_head:
            divisors = [d for d in range(1, self.n_head + 1) if self.n_head % d == 0]
            raise ConfigError(
                "n_kv_head",
                f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): try one of {divisors}",
            )
        if not self.rope_theta > 0:
            raise ConfigError("rope_theta", f"rope_theta ({self.rope_theta}) must be > 0: try 10000.0")
        if not self.norm_eps > 0:
            raise ConfigError("norm_eps", f"norm_eps ({self.norm_eps}) must be > 0: try 1e-5")
        if self.intermediate_size is None:
            if self.mlp == "gelu":
                self.intermediate_size = 4 * self.n_embd
            else:
                # SwiGLU has three matrices instead of two; 2/3 of 4*n_embd keeps the parameter count about equal
                # (Llama does this), rounded up to a multiple of 8 for friendlier matmul shapes
                self.intermediate_size = _round_up(int(8 * self.n_embd / 3), 8)
        _at_least("intermediate_size", self.intermediate_size, 1, f"try {4 * self.n_embd} or leave it empty")


@dataclass
class TrainConfig(_ConfigMixin):
    batch_size: int = 12  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step; tokens/step = batch_size * grad_accum * block_size
    max_steps: int = 5000  # optimizer steps in the whole run
    # AdamW
    learning_rate: float = 6e-4  # peak learning rate, reached after warmup
    warmup_steps: int = 100  # linear warmup from 0 to learning_rate
    lr_decay_steps: int | None = None  # cosine decay ends here; None = max_steps (~max_steps per Chinchilla)
    min_lr: float = 6e-5  # floor after decay, ~learning_rate/10 per Chinchilla
    weight_decay: float = 0.1  # applied to matrices only (see GPT.configure_optimizers)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0.0 = no clipping (the norm is still reported)
    # evaluation and checkpoints
    eval_interval: int = 250  # estimate train/val loss every this many steps (and at the first and last)
    eval_iters: int = 20  # batches per loss estimate
    checkpoint_interval: int = 1000  # call on_checkpoint every this many steps (and at the last); 0 = only the last
    keep_last: int = 3  # checkpoint rotation: keep this many most recent (plus the best by val loss)
    seed: int = 1337
    # system
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    dtype: str = "auto"  # "auto" = bfloat16 autocast on CUDA when supported, else float16 on CUDA, else float32
    compile: bool = False  # torch.compile the model: faster steps on CUDA after a slow first one
    # processes (one per device) that train the run together with DDP; they share the same global batch of
    # batch_size * grad_accum sequences, so the curve does not depend on this (see workers/gpt/train.py rank_share)
    devices: int = 1
    # which of the worker's GPUs the ranks use, in rank order, written as CUDA_VISIBLE_DEVICES is ("0,2"): one per
    # device; empty = GPUs 0..devices-1. Only for CUDA (CPU ranks are processes, not devices) and one machine
    device_ids: str = ""
    # report (and read the loss from the device) every this many steps; None = 1 on CPU and MPS (every step on the
    # curve), 10 on CUDA, where reading a number waits for the GPU and would stall its queue of kernels every step
    log_interval: int | None = None

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Check every field; raise ConfigError naming the first bad one. Fills lr_decay_steps."""
        self._check_types()
        for name in ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_iters", "keep_last", "devices"):
            _at_least(name, getattr(self, name), 1)
        if self.grad_accum % self.devices and self.batch_size % self.devices:
            raise ConfigError("devices", share_error(self.batch_size, self.grad_accum, self.devices))
        ids = self.device_list()
        self.device_ids = ",".join(map(str, ids)) if ids else ""  # " 0, 2" -> "0,2"
        if self.log_interval is not None:
            _at_least("log_interval", self.log_interval, 1, "or leave it empty for the device's default")
        for name in ("warmup_steps", "checkpoint_interval", "weight_decay", "grad_clip", "min_lr"):
            _at_least(name, getattr(self, name), 0)
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate", f"learning_rate ({self.learning_rate}) must be > 0: try 6e-4")
        if self.min_lr > self.learning_rate:
            raise ConfigError(
                "min_lr",
                f"min_lr ({self.min_lr}) must be <= learning_rate ({self.learning_rate}): "
                f"try min_lr={self.learning_rate / 10:g}",
            )
        if self.lr_decay_steps is None:
            self.lr_decay_steps = max(self.max_steps, self.warmup_steps)  # a run shorter than its warmup never decays
        if self.lr_decay_steps < self.warmup_steps:
            raise ConfigError(
                "lr_decay_steps",
                f"lr_decay_steps ({self.lr_decay_steps}) must be >= warmup_steps ({self.warmup_steps}): "
                f"try lr_decay_steps={max(self.max_steps, self.warmup_steps)} or fewer warmup_steps",
            )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(name, f"{name} ({value}) must be in [0, 1): try {0.9 if name == 'beta1' else 0.95}")
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)


    def device_list(self) -> list[int] | None:
        """device_ids as GPU numbers in rank order; None when empty (GPUs 0..devices-1). Raises ConfigError naming
        device_ids when they are not numbers, name one GPU twice, or are not one per device."""
        text = self.device_ids.strip()
        if not text:
            return None
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ConfigError("device_ids", f"device_ids ({text!r}) must be GPU numbers separated by commas, as in "
                                            f"CUDA_VISIBLE_DEVICES: e.g. 0,2, or empty for the first ones")
        ids = [int(p) for p in parts]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ConfigError("device_ids", f"device_ids ({text}) names GPU {twice[0]} twice: every rank needs a "
                                            f"device of its own")
        if len(ids) != self.devices:
            raise ConfigError("device_ids", f"device_ids ({text}) names {len(ids)} GPU(s) but devices is "
                                            f"{self.devices}: name one GPU per device, or set devices to {len(ids)}")
        return ids


def devices_fit_error(train: TrainConfig, device: dict, *, where: str) -> ConfigError | None:
    """The run's devices against a worker's (`device` as workers.devices.describe_device and the heartbeat give it:
    kind, count of GPUs, cores): GPUs chosen by number must exist there, and a CUDA run cannot have more ranks than
    GPUs. (CPU ranks are processes: more of them than cores is slow, not impossible; the form keeps to the cores.)"""
    ids, kind, count = train.device_list(), device.get("kind"), int(device.get("count") or 1)
    if ids and kind != "cuda":
        return ConfigError("device_ids", f"device_ids ({train.device_ids}) choose GPUs, but {where} computes on "
                                         f"{str(kind).upper()}: leave device_ids empty")
    if ids and max(ids) >= count:
        return ConfigError("device_ids", f"device_ids ({train.device_ids}): {where} has {count} GPU(s), numbered "
                                         f"0..{count - 1}, so GPU {max(ids)} is not there: choose among 0..{count - 1}")
    if kind == "cuda" and train.devices > count:
        return ConfigError("devices", f"devices ({train.devices}) is more than the {count} GPU(s) of {where}: ask "
                                      f"for at most {count}")
    return None


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# -----------------------------------------------------------------------------
# sizing, without building the model


def param_count(cfg: GPTConfig, non_embedding: bool = False) -> int:
    """Exact parameter count of GPT(cfg), equal to sum(p.numel() for p in model.parameters()).

    With non_embedding=True the position embeddings are left out, as nanoGPT's get_num_params does: they are a table
    lookup, not compute. The token embedding stays in because, tied, it is also the output head's matmul.
    """
    C, V, I = cfg.n_embd, cfg.vocab_size, cfg.intermediate_size
    q_kv = (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_size  # fused q, k, v projection width
    norm = C + (C if cfg.norm == "layernorm" and cfg.bias else 0)  # RMSNorm has no bias
    b = 1 if cfg.bias else 0
    attn = C * q_kv + b * q_kv + C * C + b * C  # c_attn + c_proj
    if cfg.mlp == "gelu":
        mlp = C * I + b * I + I * C + b * C  # c_fc + c_proj
    else:
        mlp = 2 * (C * I + b * I) + I * C + b * C  # c_fc + c_gate + c_proj
    n = V * C + cfg.n_layer * (2 * norm + attn + mlp) + norm  # wte + blocks + ln_f
    if cfg.pos == "learned" and not non_embedding:
        n += cfg.block_size * C  # wpe
    if not cfg.tie_embeddings:
        n += V * C  # lm_head (no bias)
    return n


def flops_per_token(cfg: GPTConfig) -> int:
    """Training FLOPs per token (forward + backward) at full context, as in the PaLM paper appendix B and nanoGPT:
    6N for the matmuls with the weights plus 12 * n_layer * n_embd * block_size for attention scores and values."""
    return 6 * param_count(cfg, non_embedding=True) + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def memory_estimate(gpt: GPTConfig, train: TrainConfig) -> dict[str, int]:
    """Rough training memory in bytes by part. Order-of-magnitude guidance for a form, not a promise."""
    n = param_count(gpt)
    B, T, C, L, H, V = train.batch_size, gpt.block_size, gpt.n_embd, gpt.n_layer, gpt.n_head, gpt.vocab_size
    # weights stay float32 under autocast; "auto" may mean float32 (CPU), so assume it for an upper bound
    act_bytes = 2 if train.dtype in ("bfloat16", "float16") else 4
    # activations saved for backward per layer: ~ B*T*C*(34 + 5*H*T/C) bytes in 16-bit (Korthikanti et al. 2022,
    # "Reducing Activation Recomputation"); the H*T term is the T x T attention matrix, which fused attention kernels
    # avoid, so this overestimates on CUDA
    activations = L * B * T * C * (34 + 5 * H * T // C) * act_bytes // 2
    logits = 2 * B * T * V * 4  # float32 logits and their gradient: often the largest part for small models
    return {
        "weights": 4 * n,
        "grads": 4 * n,
        "optimizer": 8 * n,  # AdamW keeps exp_avg and exp_avg_sq in float32
        "activations": activations + logits,
    }


def memory_estimate_bytes(gpt: GPTConfig, train: TrainConfig) -> int:
    """Rough training memory in bytes: weights + grads + AdamW states + activations of one micro-batch."""
    return sum(memory_estimate(gpt, train).values())


# -----------------------------------------------------------------------------
# does it fit: the checks the submit form makes before a run is queued and the worker makes again before it trains,
# one wording for both. Each returns None when all is well.

GiB = 1024**3
MEMORY_HEADROOM = 0.85  # a run may plan to use this share of a device's memory; the rest is the OS, torch, caches


def split_fit_error(block_size: int, splits: dict[str, int | None], *, approx: bool = False,
                    of: str = "") -> ConfigError | None:
    """block_size against the split sizes in tokens ({"validation": n, "training": n}; None = unknown): every
    sample is block_size + 1 consecutive tokens of one split. `approx` says the counts are estimates; `of` names the
    data ("of shakespeare with gpt2")."""
    for split, tokens in splits.items():
        if tokens is None or tokens > block_size:
            continue
        about = "about " if approx else ""
        where = f" {of}" if of else ""
        return ConfigError("block_size", (
            f"block_size ({block_size}) is larger than the {split} split ({about}{tokens:,} tokens{where}): each "
            f"sample needs block_size + 1 tokens. Use block_size={max(2, tokens // 2)} or less, or more text (or a "
            f"larger validation share of the corpus)"))
    return None


def memory_fit_error(gpt: GPTConfig, train: TrainConfig, *, memory_bytes: int | None,
                     device: str = "the device") -> ConfigError | None:
    """The training memory estimate against a device's memory (None = unknown: no check). The field named is the
    one whose part dominates: batch_size for activations, n_embd for weights and AdamW state."""
    if not memory_bytes:
        return None
    parts = memory_estimate(gpt, train)
    need = sum(parts.values())
    if need <= memory_bytes * MEMORY_HEADROOM:
        return None
    activations = parts["activations"]
    states = parts["weights"] + parts["grads"] + parts["optimizer"]
    if activations > need / 2:
        field, fix = "batch_size", "reduce batch_size or block_size (activations dominate)"
    else:
        field, fix = "n_embd", "reduce n_layer or n_embd (weights and AdamW state dominate)"
    return ConfigError(field, (
        f"this model needs about {need / GiB:.1f} GiB to train (weights, gradients and AdamW {states / GiB:.1f} GiB, "
        f"activations {activations / GiB:.1f} GiB), but {device} has {memory_bytes / GiB:.1f} GiB: {fix}"))


def missing_chars_error(*, tokenizer: str, corpus: str, alphabet, chars) -> str | None:
    """A character tokenizer (its `chars`) cannot encode a corpus whose `alphabet` has characters it lacks."""
    missing = sorted(set(alphabet) - set(chars))
    if not missing:
        return None
    shown = " ".join(repr(c) for c in missing[:8]) + (" …" if len(missing) > 8 else "")
    return (f"{tokenizer} has no id for {len(missing)} character(s) of {corpus} ({shown}): choose {corpus}'s own "
            f"character tokenizer (build one from this corpus), or a BPE one")
