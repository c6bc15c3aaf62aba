"""What a run will cost before it is launched: parameters, FLOPs, memory, tokens, and time on each train worker.

Pure arithmetic on the configs (workers.gpt.config is torch-free), on the workers' device profiles and on step
times measured before. Time comes from `time_estimate`, the one estimator the pretraining, fine-tuning and GRPO forms
share: when runs of the same shape already trained on that kind of device (apps.training.selectors.step_times), their
recorded ms/step predict this run's (a narrow range, from the spread of those steps); otherwise the FLOPs model (the
peak FLOP/s a worker measured when it started, times the model FLOPs utilization runs reached there, or a typical
figure) gives a wide range, because it counts matrix multiplications only.
"""

import json

from apps.system.devices import device_key
from workers.gpt.config import (MEMORY_HEADROOM, GPTConfig, TrainConfig, flops_per_token, memory_estimate,
                               param_count)

# MFU to assume on a device no run has finished on yet: small models keep a GPU far from its peak
DEFAULT_MFU = {"cpu": 0.4, "cuda": 0.15, "mps": 0.15}

# How far a FLOPs-model time may be off, as factors of it. The model counts matmul work only; a small model spends
# much of each step on fixed costs (Python, kernel launches, the optimizer, data), and a shared machine is slower
# than its measured peak, so a real step is often several times slower, seldom much faster (a newcomer saw 1 min 46 s
# predicted and 4 min 32 s happen).
MODEL_RANGE = (0.7, 3.0)
# The least spread around a measured step time: load on the machine changes from run to run
MEASURED_SPREAD = 0.15


def time_estimate(*, steps: float, model_step_s: float | None = None, measured: dict | None = None) -> dict | None:
    """Seconds for `steps` steps (evaluations may be counted in as step-equivalents), as a range.

    measured: {"ms", "low_ms", "high_ms", "runs"} (selectors.step_times: the median and the 20th/80th percentiles of
    recent steps of runs of the same shape on this kind of device); it wins over model_step_s, the FLOPs model's
    seconds per step. None when neither is known."""
    if measured and measured.get("ms"):
        per_step = measured["ms"] / 1000
        low = min(measured.get("low_ms") or measured["ms"], measured["ms"] * (1 - MEASURED_SPREAD)) / 1000
        high = max(measured.get("high_ms") or measured["ms"], measured["ms"] * (1 + MEASURED_SPREAD)) / 1000
        source, runs = "measured", int(measured.get("runs", 1))
    elif model_step_s:
        per_step, low, high = model_step_s, model_step_s * MODEL_RANGE[0], model_step_s * MODEL_RANGE[1]
        source, runs = "model", 0
    else:
        return None
    return {"seconds": per_step * steps, "low": low * steps, "high": high * steps, "per_step_s": per_step,
            "per_step_ms": per_step * 1000, "source": source, "measured": source == "measured", "runs": runs}


def shape_key(*, kind: str, model_config: dict, train_config: dict, data: dict | None = None) -> str:
    """What decides a step's time, as a string: runs with equal keys on the same device take about as long per
    step. The model's shape (dropout aside) and, by kind, the batch: pretraining's micro-batches and precision, a
    fine-tune's conversations per step and context and LoRA, GRPO's samples per step and answer length."""
    model = {k: v for k, v in model_config.items() if k != "dropout"}
    if kind == "grpo":
        g = train_config.get("grpo") or {}
        batch = {k: g.get(k) for k in ("prompts_per_step", "group_size", "grad_accum", "max_new_tokens",
                                       "num_iterations", "beta")}
        batch |= {k: train_config.get(k) for k in ("lora", "lora_r")}
    else:
        batch = {k: train_config.get(k) for k in ("batch_size", "grad_accum", "dtype", "compile", "devices")}
        if kind == "sft":
            sft = (data or {}).get("sft") or {}
            lora = sft.get("lora") or {}
            batch |= {"context": sft.get("block_size"), "lora": [lora.get("r"), sorted(lora.get("targets") or [])]
                      if lora else None}
    return json.dumps({"kind": kind, "model": model, "batch": batch}, sort_keys=True, default=str)


def estimate(model_cfg: GPTConfig, train_cfg: TrainConfig, *, workers: list[dict] = (),
             train_tokens: int | None = None, measured: dict | None = None) -> dict:
    """Sizes and costs; `workers` are live train workers (apps.training.selectors.train_workers), `measured` the
    step times of runs of this shape by device key (selectors.step_times)."""
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
        "workers": [_on_worker(w, step_flops, total_flops, memory_total, measured or {}) for w in workers],
    }


def flops_per_second(worker: dict) -> float | None:
    """What the FLOPs model assumes a worker does: its measured peak times the MFU runs reached there (or a
    typical MFU); None when it never measured its peak."""
    device = worker.get("device") or {}
    profile = worker.get("profile")
    peak = getattr(profile, "peak_flops", None)
    mfu = getattr(profile, "mfu", None) or DEFAULT_MFU.get(device.get("kind", "cpu"), 0.2)
    return peak * mfu if peak else None


def worker_times(*, workers: list[dict], steps: float, step_flops: float | None = None,
                 step_seconds: dict | None = None, measured: dict | None = None) -> list[dict]:
    """time_estimate on each live train worker: {"name", "device", "time"}. The FLOPs model's seconds per step are
    step_flops / the worker's FLOP/s, or step_seconds[worker name] where the caller models the step itself (GRPO's
    sampling is not FLOP-bound); measured is selectors.step_times for the run's shape."""
    out = []
    for w in workers:
        device = w.get("device") or {}
        if step_seconds is not None:
            model_s = step_seconds.get(w["name"])
        else:
            fps = flops_per_second(w)
            model_s = step_flops / fps if fps and step_flops else None
        out.append({"name": w["name"], "device": device,
                    "time": time_estimate(steps=steps, model_step_s=model_s,
                                          measured=(measured or {}).get(device_key(device)))})
    return out


def _on_worker(worker: dict, step_flops: float, total_flops: float, memory_total: int, measured: dict) -> dict:
    device = worker.get("device") or {}
    kind = device.get("kind", "cpu")
    profile = worker.get("profile")
    measured_mfu = getattr(profile, "mfu", None)
    mfu = measured_mfu or DEFAULT_MFU.get(kind, 0.2)
    capacity = device.get("memory_bytes")
    # evaluations counted as step-equivalents, so a measured ms/step covers them too
    [timed] = worker_times(workers=[worker], steps=total_flops / step_flops, step_flops=step_flops,
                           measured=measured)
    time = timed["time"]
    return {
        "name": worker["name"],
        "device": device,
        "time": time,
        "seconds": time["seconds"] if time else None,
        "mfu": mfu,
        "mfu_measured": measured_mfu is not None,
        "runs": getattr(profile, "runs", 0),
        "memory_bytes": capacity,
        "fits": capacity is None or memory_total <= capacity * MEMORY_HEADROOM,
    }


def fits_somewhere(result: dict) -> bool:
    """True when some live train worker has the memory (or none is live: nothing to check against yet)."""
    return not result["workers"] or any(w["fits"] for w in result["workers"])
