"""
The training loop, after karpathy/nanoGPT's train.py: a plain loop you can step through in a debugger.

train() knows nothing about Django, files or sockets. It reports through callbacks (on_step, on_eval,
on_checkpoint), asks should_stop() once per step, and returns the final TrainState. The worker glue turns the
callbacks into service calls and published events, and saves checkpoints with checkpoint.save_train_state().

Pretraining and fine-tuning share it: by default train() builds GPT(model_cfg) from the seed and samples windows of
token arrays; a caller may instead hand in an already-built `model` (loaded weights, perhaps wrapped with LoRA
adapters: only parameters with requires_grad are optimised) and a `batch_fn` that makes each batch (targets of -1
carry no loss).

On CPU a run is deterministic: the same configs and data give the same losses, and a run resumed from a checkpoint
continues exactly as if it had never stopped (model, AdamW state, and both RNGs are restored).

On CUDA the loop takes the fast path (the parts marked "CUDA" have not been run on a GPU in this repository's
tests, which are CPU-only; `make bench-gpu` exercises them where a GPU is): bf16 autocast, TF32 matmuls, fused
AdamW (GPT.configure_optimizers), flash attention through F.scaled_dot_product_attention, torch.compile when asked,
and no host-device synchronisation between log steps: the loss and the gradient norm stay on the device and are
read (.item()) only every log_interval steps, evaluations and checkpoints.

With ddp=True, train() runs as one rank of the process group the caller has initialised (torch.distributed; gloo on
CPU, NCCL on CUDA, as nanoGPT's `torchrun` runs): the model is wrapped in DistributedDataParallel, every rank draws the
whole global batch from the shared data generator and computes its own share (rank_share), gradients are averaged
over the ranks in the last micro-step's backward (no_sync before it), the logged loss is averaged over the ranks,
should_stop is agreed on (any rank's True stops every rank at the same step), and rank 0 alone evaluates and calls
the callbacks. Because the global batch is the same set of rows whatever the world size, 2 ranks follow the 1-rank
curve to float32 rounding (the gradient is summed in another order), and a checkpoint from N ranks resumes on M.
"""

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from .config import ConfigError, GPTConfig, TrainConfig, flops_per_token, share_error
from .data import get_batch
from .model import GPT

BatchFn = Callable[[str, torch.Generator], tuple[Tensor, Tensor]]  # ("train" | "val", generator) -> (x, y), (B, T)


@dataclass
class TrainState:
    """Where a run stands. Handed to on_eval and on_checkpoint and returned by train(); everything a checkpoint
    needs."""
    model: torch.nn.Module  # the plain module (a GPT, or a GPT wrapped with adapters), not a torch.compile wrapper
    optimizer: torch.optim.Optimizer
    model_cfg: GPTConfig
    train_cfg: TrainConfig
    device: str
    step: int = 0  # optimizer steps completed
    loss: float | None = None  # loss of the last logged step's batch
    train_loss: float | None = None  # last evaluation's estimate on the train split
    val_loss: float | None = None  # last evaluation's estimate on the val split
    best_val_loss: float | None = None
    stopped: bool = False  # should_stop() ended the run early
    rng_state: dict[str, bytes] = field(default_factory=dict)  # torch (dropout), data (batch sampling), cuda


def train(model_cfg: GPTConfig, train_cfg: TrainConfig, train_data=None, val_data=None, *,
          model: torch.nn.Module | None = None, batch_fn: BatchFn | None = None, peak_flops: float | None = None,
          on_step=None, on_eval=None, on_checkpoint=None, should_stop=None, resume=None,
          ddp: bool = False) -> TrainState:
    """Train a GPT and return the final TrainState.

    train_data, val_data  token arrays (1-D memmaps, arrays or tensors of ids) to sample windows from (val_data
                      None: no val split); both None when a batch_fn makes the batches
    model             an already-built model to train (loaded weights, maybe LoRA-wrapped) instead of GPT(model_cfg)
                      built from the seed; only its parameters with requires_grad are optimised
    batch_fn(split, generator) -> (x, y)  makes a (batch_size, block_size) batch of the "train" or the "val" split
                      (both are asked for), replacing get_batch for the training steps and the evaluations; y == -1
                      marks positions without loss. Drawing only from `generator` keeps runs seeded and resumable
    peak_flops        the device's peak FLOP/s (workers.devices.peak_flops): reports carry MFU against it
    on_step(report)   every log_interval steps and the last: {"step", "loss", "lr", "grad_norm", "ms", "tokens_per_s",
                      "mfu"}; ms and tokens_per_s are means over the steps since the previous report
    on_eval(report, state)  at step 0, every eval_interval steps and the last: {"step", "train_loss", "val_loss"},
                      and the TrainState (its model, to sample from)
    on_checkpoint(state)  every checkpoint_interval steps and at the last step (not when stopped: the caller may
                      save the returned state itself)
    should_stop()     checked before every step (under ddp: before the steps after a log step); True ends the run
                      with state.stopped set
    resume            a checkpoint.Checkpoint with optimizer and RNG state: continue from its step + 1
    ddp               train as one rank of the initialised default process group (see the module's docstring); the
                      callbacks are called on rank 0 only, so other ranks may pass them or not
    """
    model_cfg.validate()
    train_cfg.validate()
    if batch_fn is None and train_data is None:
        raise ValueError("train() needs train_data (a token array) or a batch_fn that makes the batches")
    device = resolve_device(train_cfg.device)
    device_type = torch.device(device).type
    dtype = resolve_dtype(train_cfg.dtype, device)
    if device_type == "cuda":  # CUDA: TF32 for the float32 matmuls autocast leaves (nanoGPT does the same)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # weights stay float32; autocast runs the matmuls in bf16/fp16. fp16 needs loss scaling, bf16 does not
    ctx = nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device_type, dtype=dtype)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == torch.float16))
    log_every = train_cfg.log_interval or (10 if device_type == "cuda" else 1)

    world, rank = (dist.get_world_size(), dist.get_rank()) if ddp else (1, 0)
    torch.manual_seed(train_cfg.seed)  # the weight init and then dropout draw from the global generator
    if model is None:
        model = GPT(model_cfg)
    model = model.to(device)
    if rank:
        torch.manual_seed(train_cfg.seed + rank)  # dropout: other masks on other rows (DDP copies rank 0's weights)
    # AdamW over the parameters with requires_grad; works on any module, also a GPT wrapped with adapters
    optimizer = GPT.configure_optimizers(
        model, train_cfg.weight_decay, train_cfg.learning_rate, (train_cfg.beta1, train_cfg.beta2), device_type)
    trainable = [p for p in model.parameters() if p.requires_grad]
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
        if rank:  # the checkpoint holds rank 0's dropout generator
            torch.manual_seed(train_cfg.seed + rank + world * resume.step)
        state.step = resume.step
        state.train_loss, state.val_loss = resume.losses.get("train"), resume.losses.get("val")
        state.best_val_loss = resume.losses.get("best_val", state.val_loss)

    fwd = torch.compile(model) if train_cfg.compile else model  # evaluations call it; training steps call step_fwd
    step_fwd = DistributedDataParallel(fwd, forward_sync_buffers=False) if ddp else fwd  # syncs weights from rank 0
    B, T, accum = train_cfg.batch_size, model_cfg.block_size, train_cfg.grad_accum
    micros, rows = rank_share(B, accum, world, rank)  # this rank's micro-steps, and rows of each, in the global batch
    if batch_fn is None:
        arrays = {"train": train_data} if val_data is None else {"train": train_data, "val": val_data}
        splits = list(arrays)

        def batch_fn(split, generator):
            return get_batch(arrays[split], B, T, generator, device)
    else:
        splits = ["train", "val"]

    def batch(split, generator, rows=slice(None)):
        x, y = batch_fn(split, generator)
        return x[rows].to(device, non_blocking=True), y[rows].to(device, non_blocking=True)

    tokens_per_step = B * T * accum
    step_flops = flops_per_token(model_cfg) * tokens_per_step

    def evaluate():
        losses = estimate_loss(fwd, batch, splits, train_cfg, ctx)
        state.train_loss, state.val_loss = losses["train"], losses.get("val")  # rank 0's: the same weights everywhere
        if state.val_loss is not None and (state.best_val_loss is None or state.val_loss < state.best_val_loss):
            state.best_val_loss = state.val_loss
        if on_eval is not None:
            on_eval({"step": state.step, "train_loss": state.train_loss, "val_loss": state.val_loss}, state)

    for split in splits:
        _check_ids(split, batch, model_cfg, train_cfg)
    if state.step == 0 and rank == 0:
        evaluate()  # the loss before training: about ln(vocab_size) for a fresh init
    model.train()
    synced_step, t_synced = state.step, time.perf_counter()  # the device was last waited for here
    loss_sum = grad_norm = None
    while state.step < train_cfg.max_steps:
        # under ddp the ranks agree at log steps only (reading the flag waits for the device), and every rank leaves
        # at the same step, or the others would wait for ever
        checking = not ddp or state.step % log_every == 0
        stop = checking and rank == 0 and should_stop is not None and should_stop()
        if ddp and checking:
            stop = _any_rank(stop, device)
        if stop:
            state.stopped = True
            break
        step = state.step + 1
        lr = get_lr(step, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            # every rank draws every micro-batch, so the data generator stays the same on all of them
            x, y = batch("train", data_gen, rows)
            if micro not in micros:
                continue
            # DDP averages the gradients over the ranks in the backward of this rank's last micro-step only
            sync = nullcontext() if not ddp or micro == micros[-1] else step_fwd.no_sync()
            with sync:
                with ctx:
                    _, loss = step_fwd(x, y)
                    loss = loss / len(micros)  # the gradient of the mean over this rank's micro-batches
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        # clip_grad_norm_ returns the norm before clipping; with clipping off (inf) it only measures
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, train_cfg.grad_clip or math.inf)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)  # free the gradient memory now
        state.step = step

        last = step == train_cfg.max_steps
        evaluating = step % train_cfg.eval_interval == 0 or last
        every = train_cfg.checkpoint_interval
        saving = on_checkpoint is not None and (last or (every and step % every == 0))
        if step % log_every == 0 or last or evaluating or (every and step % every == 0):  # the same on every rank
            if ddp:
                dist.all_reduce(loss_sum)  # the mean of the ranks' means: the global batch's loss
                loss_sum /= world
            state.loss = loss_sum.item()  # .item() waits for the device, so the timing below is honest
            dt = (time.perf_counter() - t_synced) / (step - synced_step)  # per step, since the last sync
            if on_step is not None and rank == 0:
                on_step({
                    "step": step,
                    "loss": state.loss,
                    "lr": lr,
                    "grad_norm": grad_norm.item(),
                    "ms": dt * 1000,
                    "tokens_per_s": tokens_per_step / dt,
                    "mfu": step_flops / dt / peak_flops if peak_flops else None,
                })
            if evaluating and rank == 0:
                evaluate()
            if saving and rank == 0:
                state.rng_state = _rng_state(data_gen, device)
                on_checkpoint(state)
            synced_step, t_synced = step, time.perf_counter()  # evaluations and callbacks are not step time

    if loss_sum is not None and synced_step != state.step:  # stopped between two log steps
        state.loss = loss_sum.item()  # (this rank's share, under ddp: the ranks agreed only to stop)
    state.rng_state = _rng_state(data_gen, device)
    return state


def rank_share(batch_size: int, grad_accum: int, world: int, rank: int) -> tuple[range, slice]:
    """Which part of the global batch (grad_accum micro-batches of batch_size rows) rank `rank` of `world` computes:
    its micro-steps and the rows of each. Whole micro-batches when grad_accum divides among the ranks (nanoGPT
    divides gradient accumulation so), else a slice of every micro-batch's rows. Every share has the same size, so
    the mean of the ranks' mean losses is the mean over the global batch."""
    if grad_accum % world == 0:
        n = grad_accum // world
        return range(rank * n, (rank + 1) * n), slice(None)
    if batch_size % world == 0:
        n = batch_size // world
        return range(grad_accum), slice(rank * n, (rank + 1) * n)
    raise ConfigError("devices", share_error(batch_size, grad_accum, world))


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
def estimate_loss(model, batch: BatchFn, splits, cfg: TrainConfig, ctx=nullcontext()) -> dict[str, float]:
    """Mean loss over eval_iters batches of each split (batch(split, generator) -> (x, y) on the device), in eval
    mode (no dropout). Every evaluation draws the same batches from a fixed seed, so successive estimates differ only
    by the model, and the training RNG is untouched."""
    model.eval()
    out = {}
    for name in splits:
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        losses = torch.zeros(cfg.eval_iters, device=next(model.parameters()).device)
        for k in range(cfg.eval_iters):
            x, y = batch(name, gen)
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss.detach()  # stays on the device: one sync per split, not one per batch
        out[name] = losses.mean().item()
    model.train()
    return out


# -----------------------------------------------------------------------------
# device and dtype


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


# -----------------------------------------------------------------------------
# helpers


def _check_ids(split: str, batch: BatchFn, model_cfg: GPTConfig, train_cfg: TrainConfig):
    """Catch data from another tokenizer up front, with a message instead of an index error deep in the embedding.
    Checks a few sampled batches (scanning a large memmap would take long), drawn with their own generator."""
    gen = torch.Generator().manual_seed(train_cfg.seed + 2)
    for _ in range(4):
        try:
            x, y = batch(split, gen)
        except ValueError as e:
            raise ValueError(f"{split} data: {e}") from None
        high = int(torch.maximum(x.max(), y.max()))
        if high >= model_cfg.vocab_size:
            raise ValueError(f"the {split} data holds token id {high} but vocab_size is {model_cfg.vocab_size}: "
                             f"it was tokenized with a different tokenizer, or vocab_size is too small")


def _any_rank(flag: bool, device: str) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


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
