"""
The training loop, after karpathy/nanoGPT's train.py: a plain loop you can step through in a debugger.

train() knows nothing about Django, files or sockets. It reports through callbacks (on_step, on_eval,
on_checkpoint), asks should_stop() once per step, and returns the final TrainState. The worker glue turns the
callbacks into service calls and published events, and saves checkpoints with checkpoint.save_train_state().

On CPU a run is deterministic: the same configs and data give the same losses, and a run resumed from a checkpoint
continues exactly as if it had never stopped (model, AdamW state, and both RNGs are restored).
"""

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from .config import ConfigError, GPTConfig, TrainConfig, flops_per_token
from .data import get_batch
from .model import GPT


@dataclass
class TrainState:
    """Where a run stands. Handed to on_checkpoint and returned by train(); everything a checkpoint needs."""
    model: GPT  # the plain module, also when training used a torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    model_cfg: GPTConfig
    train_cfg: TrainConfig
    device: str
    step: int = 0  # optimizer steps completed
    loss: float | None = None  # loss of the last step's batch
    train_loss: float | None = None  # last evaluation's estimate on train_data
    val_loss: float | None = None  # last evaluation's estimate on val_data
    best_val_loss: float | None = None
    stopped: bool = False  # should_stop() ended the run early
    rng_state: dict[str, bytes] = field(default_factory=dict)  # torch (dropout), data (batch sampling), cuda


def train(model_cfg: GPTConfig, train_cfg: TrainConfig, train_data, val_data=None, *, on_step=None, on_eval=None,
          on_checkpoint=None, should_stop=None, resume=None) -> TrainState:
    """Train a GPT on token arrays (1-D memmaps, arrays or tensors of ids) and return the final TrainState.

    on_step(report)   after every step: {"step", "loss", "lr", "grad_norm", "ms", "tokens_per_s", "mfu"}
    on_eval(report)   at step 0, every eval_interval steps and the last: {"step", "train_loss", "val_loss"}
    on_checkpoint(state)  every checkpoint_interval steps and at the last step (not when stopped: the caller may
                      save the returned state itself)
    should_stop()     checked before every step; True ends the run with state.stopped set
    resume            a checkpoint.Checkpoint with optimizer and RNG state: continue from its step + 1
    """
    model_cfg.validate()
    train_cfg.validate()
    device = resolve_device(train_cfg.device)
    device_type = torch.device(device).type
    dtype = resolve_dtype(train_cfg.dtype, device)
    # weights stay float32; autocast runs the matmuls in bf16/fp16. fp16 needs loss scaling, bf16 does not
    ctx = nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device_type, dtype=dtype)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == torch.float16))

    peak = device_peak_flops(device)  # may measure a matmul the first time: do it before the timed steps

    torch.manual_seed(train_cfg.seed)  # the weight init and then dropout draw from the global generator
    model = GPT(model_cfg).to(device)
    optimizer = model.configure_optimizers(
        train_cfg.weight_decay, train_cfg.learning_rate, (train_cfg.beta1, train_cfg.beta2), device_type)
    data_gen = torch.Generator().manual_seed(train_cfg.seed)  # batch sampling has its own generator, saved with it
    state = TrainState(model, optimizer, model_cfg, train_cfg, device)

    if resume is not None:
        if resume.model_cfg != model_cfg:
            raise ValueError("the checkpoint was trained with a different model config: pass resume.model_cfg")
        if resume.optimizer_state is None or not resume.rng_state:
            raise ValueError("the checkpoint has no optimizer or RNG state (saved for inference?): "
                             "it can be loaded as weights but not resumed")
        model.load_state_dict(resume.model_state)
        optimizer.load_state_dict(resume.optimizer_state)
        _set_rng_state(resume.rng_state, data_gen, device)
        state.step = resume.step
        state.train_loss, state.val_loss = resume.losses.get("train"), resume.losses.get("val")
        state.best_val_loss = resume.losses.get("best_val", state.val_loss)

    fwd = torch.compile(model) if train_cfg.compile else model
    splits = {"train": train_data} if val_data is None else {"train": train_data, "val": val_data}
    B, T, accum = train_cfg.batch_size, model_cfg.block_size, train_cfg.grad_accum
    tokens_per_step = B * T * accum
    step_flops = flops_per_token(model_cfg) * tokens_per_step

    def evaluate():
        losses = estimate_loss(fwd, splits, train_cfg, T, device, ctx)
        state.train_loss, state.val_loss = losses["train"], losses.get("val")
        if state.val_loss is not None and (state.best_val_loss is None or state.val_loss < state.best_val_loss):
            state.best_val_loss = state.val_loss
        if on_eval is not None:
            on_eval({"step": state.step, "train_loss": state.train_loss, "val_loss": state.val_loss})

    for name, data in splits.items():
        _check_ids(name, data, model_cfg, train_cfg)
    if state.step == 0:
        evaluate()  # the loss before training: about ln(vocab_size) for a fresh init
    model.train()
    while state.step < train_cfg.max_steps:
        if should_stop is not None and should_stop():
            state.stopped = True
            break
        step = state.step + 1
        lr = get_lr(step, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for _ in range(accum):
            x, y = get_batch(train_data, B, T, data_gen, device)
            with ctx:
                _, loss = fwd(x, y)
                loss = loss / accum  # the gradient of the mean over all micro-batches
            scaler.scale(loss).backward()
            loss_sum += loss.detach()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        # clip_grad_norm_ returns the norm before clipping; with clipping off (inf) it only measures
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip or math.inf)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)  # free the gradient memory now
        state.loss = loss_sum.item()  # .item() waits for the device, so the timing below is honest
        dt = time.perf_counter() - t0
        state.step = step

        if on_step is not None:
            on_step({
                "step": step,
                "loss": state.loss,
                "lr": lr,
                "grad_norm": grad_norm.item(),
                "ms": dt * 1000,
                "tokens_per_s": tokens_per_step / dt,
                "mfu": step_flops / dt / peak if peak else None,
            })
        last = step == train_cfg.max_steps
        if step % train_cfg.eval_interval == 0 or last:
            evaluate()
        every = train_cfg.checkpoint_interval
        if on_checkpoint is not None and (last or (every and step % every == 0)):
            state.rng_state = _rng_state(data_gen, device)
            on_checkpoint(state)

    state.rng_state = _rng_state(data_gen, device)
    return state


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (1-based): linear warmup, then cosine decay to min_lr."""
    # 1) linear warmup over the first warmup_steps steps
    if step <= cfg.warmup_steps:
        return cfg.learning_rate * step / cfg.warmup_steps
    # 2) after lr_decay_steps, stay at min_lr
    if step > cfg.lr_decay_steps:
        return cfg.min_lr
    # 3) in between, cosine from learning_rate down to min_lr
    ratio = (step - cfg.warmup_steps) / (cfg.lr_decay_steps - cfg.warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # goes 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


@torch.no_grad()
def estimate_loss(model, splits: dict, cfg: TrainConfig, block_size: int, device="cpu",
                  ctx=nullcontext()) -> dict[str, float]:
    """Mean loss over eval_iters batches of each split, in eval mode (no dropout). Every evaluation draws the same
    batches from a fixed seed, so successive estimates differ only by the model, and the training RNG is untouched."""
    model.eval()
    out = {}
    for name, data in splits.items():
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        losses = torch.zeros(cfg.eval_iters)
        for k in range(cfg.eval_iters):
            x, y = get_batch(data, cfg.batch_size, block_size, gen, device)
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss.item()
        out[name] = losses.mean().item()
    model.train()
    return out


# -----------------------------------------------------------------------------
# device, dtype and peak FLOP/s


def resolve_device(preference: str = "auto") -> str:
    """"auto" -> cuda, then mps, then cpu. An explicit choice that is not available is a ConfigError."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "device='cuda' but CUDA is not available here: use device='auto' or 'cpu'")
    if preference == "mps" and not has_mps:
        raise ConfigError("device", "device='mps' but MPS is not available here: use device='auto' or 'cpu'")
    return preference


def resolve_dtype(preference: str, device: str) -> torch.dtype:
    """"auto" -> bfloat16 on CUDA GPUs that support it, float16 on older ones, float32 elsewhere."""
    if preference == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[preference]


# dense bf16 tensor-core FLOP/s from NVIDIA datasheets (fp16 for GPUs without bf16); the first substring of the
# device name that matches wins, so the more specific names come first
PEAK_FLOPS = [
    ("B200", 2250e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("RTX A6000", 155e12),
    ("V100", 125e12),
    ("T4", 65e12),
]
_measured_peak: dict[str, float] = {}  # device type -> measured matmul FLOP/s, measured once per process


def device_peak_flops(device) -> float:
    """Peak FLOP/s to measure MFU against: the datasheet number for known GPUs, else a matmul measured once."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in PEAK_FLOPS:
            if key in name:
                return flops
    if device.type not in _measured_peak:
        _measured_peak[device.type] = _measure_matmul_flops(device)
    return _measured_peak[device.type]


def _measure_matmul_flops(device: torch.device, n: int = 512, reps: int = 5) -> float:
    """Best FLOP/s of an n x n matmul: a practical peak for CPUs and GPUs without a datasheet entry."""
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    # constant operands: drawing random ones would advance the global RNG and change a seeded run
    a = torch.full((n, n), 0.5, device=device, dtype=dtype)
    b = torch.full((n, n), 0.25, device=device, dtype=dtype)
    best = math.inf
    for _ in range(reps + 1):  # the first round warms up
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# -----------------------------------------------------------------------------
# helpers


def _check_ids(name: str, data, model_cfg: GPTConfig, train_cfg: TrainConfig):
    """Catch data from another tokenizer up front, with a message instead of an index error deep in the embedding.
    Checks a few sampled batches (scanning a large memmap would take long), drawn with their own generator."""
    gen = torch.Generator().manual_seed(train_cfg.seed + 2)
    for _ in range(4):
        try:
            _, y = get_batch(data, train_cfg.batch_size, model_cfg.block_size, gen)
        except ValueError as e:
            raise ValueError(f"{name} data: {e}") from None
        high = int(y.max())
        if high >= model_cfg.vocab_size:
            raise ValueError(f"the {name} data holds token id {high} but vocab_size is {model_cfg.vocab_size}: "
                             f"it was tokenized with a different tokenizer, or vocab_size is too small")


def _rng_state(data_gen: torch.Generator, device: str) -> dict[str, bytes]:
    state = {
        "torch": torch.get_rng_state().numpy().tobytes(),
        "data": data_gen.get_state().numpy().tobytes(),
    }
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).numpy().tobytes()
    return state


def _set_rng_state(state: dict[str, bytes], data_gen: torch.Generator, device: str):
    def tensor(b):
        return torch.frombuffer(bytearray(b), dtype=torch.uint8)
    torch.set_rng_state(tensor(state["torch"]))
    data_gen.set_state(tensor(state["data"]))
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(tensor(state["cuda"]), device)
