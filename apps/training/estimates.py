"""What a run will cost before it is launched: parameters, FLOPs, memory, tokens, and time on each train worker.

Pure arithmetic on the configs (workers.gpt.config is torch-free) and on the workers' device profiles: the peak
FLOP/s a worker measured when it started (or a GPU's datasheet figure) times the model FLOPs utilization that runs
reached on that device before (a typical figure until one has).
"""

from workers.gpt.config import (MEMORY_HEADROOM, GPTConfig, TrainConfig, flops_per_token, memory_estimate,
                               param_count)

# MFU to assume on a device no run has finished on yet: small models keep a GPU far from its peak
DEFAULT_MFU = {"cpu": 0.4, "cuda": 0.15, "mps": 0.15}


def estimate(model_cfg: GPTConfig, train_cfg: TrainConfig, *, workers: list[dict] = (),
             train_tokens: int | None = None) -> dict:
    """Sizes and costs; `workers` are live train workers (apps.training.selectors.train_workers)."""
    tokens_per_step = train_cfg.batch_size * train_cfg.grad_accum * model_cfg.block_size
    fpt = flops_per_token(model_cfg)
    step_flops = fpt * tokens_per_step
    n_evals = train_cfg.max_steps // train_cfg.eval_interval + 1 + (train_cfg.max_steps % train_cfg.eval_interval > 0)
    # an evaluation runs eval_iters forward passes on each split: a forward pass is about a third of fwd + bwd
    eval_flops = n_evals * 2 * train_cfg.eval_iters * train_cfg.batch_size * model_cfg.block_size * fpt / 3
    total_flops = step_flops * train_cfg.max_steps + eval_flops
    memory = memory_estimate(model_cfg, train_cfg)
    memory_total = sum(memory.values())
    total_tokens = tokens_per_step * train_cfg.max_steps
    return {
        "params": param_count(model_cfg),
        "params_non_embedding": param_count(model_cfg, non_embedding=True),
        "flops_per_token": fpt,
        "flops_per_step": step_flops,
        "total_flops": total_flops,
        "tokens_per_step": tokens_per_step,
        "total_tokens": total_tokens,
        "epochs": total_tokens / train_tokens if train_tokens else None,
        "memory": memory,
        "memory_total": memory_total,
        "workers": [_on_worker(w, total_flops, memory_total) for w in workers],
    }


def _on_worker(worker: dict, total_flops: float, memory_total: int) -> dict:
    device = worker.get("device") or {}
    kind = device.get("kind", "cpu")
    profile = worker.get("profile")
    peak = getattr(profile, "peak_flops", None)
    measured_mfu = getattr(profile, "mfu", None)
    mfu = measured_mfu or DEFAULT_MFU.get(kind, 0.2)
    capacity = device.get("memory_bytes")
    return {
        "name": worker["name"],
        "device": device,
        "seconds": total_flops / (peak * mfu) if peak else None,
        "mfu": mfu,
        "mfu_measured": measured_mfu is not None,
        "runs": getattr(profile, "runs", 0),
        "memory_bytes": capacity,
        "fits": capacity is None or memory_total <= capacity * MEMORY_HEADROOM,
    }


def fits_somewhere(result: dict) -> bool:
    """True when some live train worker has the memory (or none is live: nothing to check against yet)."""
    return not result["workers"] or any(w["fits"] for w in result["workers"])
