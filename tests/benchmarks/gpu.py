"""The GPU check: GPT-2 124M (llm.c's reference shape) trained for a few hundred steps on whatever CUDA GPU is here,
through the product's own loop (workers.gpt.train.train: bf16 autocast, fused AdamW, torch.compile, flash attention
through SDPA, the loss read every log_interval steps), then generation with the KV cache (workers.gpt.generate).

    make bench-gpu          prints tokens/s and MFU against the datasheet peak, then generation tokens/s
    BENCH_GPU_STEPS=300 BENCH_GPU_BATCH=16 make bench-gpu

It stays under 5 minutes: compiling takes about one (less with a warm cache, kept under ARTIFACTS_DIR as the worker
keeps it), and training stops at TRAIN_SECONDS whatever the step. With no CUDA GPU it says so and exits 0.
BENCH_GPU_SMOKE=1 runs the same code on a tiny model on the CPU (not compiled): a check of this script, not a
measurement. Target (issue 14): >= 45 % bf16 MFU on an H100/H200, where llm.c stands.

Then GRPO steps in tests/benchmarks/test_grpo_learning.py's setting (SmolLM2-135M-Instruct, arithmetic level 1
with the short instruction, 4 prompts x G 8, 32 new tokens, full weights), timed per step against that benchmark's
median step on 2 CPU cores. Target (issue 12): >= 20x faster per step.
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STEPS = int(os.environ.get("BENCH_GPU_STEPS", 300))
BATCH = int(os.environ.get("BENCH_GPU_BATCH", 16))  # x 1024 tokens; 16 fits a 24 GB card in bf16
TRAIN_SECONDS = 150  # training stops here even if STEPS are not done, so the whole script stays under 5 minutes
WARMUP_REPORTS = 2  # log reports left out of the figures: the first holds the compilation
GEN_TOKENS = 256
GRPO_STEPS = 12  # the first GRPO_WARMUP are left out of the median
GRPO_WARMUP = 2
GRPO_CPU_STEP_S = 10.3  # median step of test_grpo_learning.py on 2 CPU cores (session 4's run, 106 steps in 20.1 min)
SMOKE = os.environ.get("BENCH_GPU_SMOKE") == "1"


def main() -> int:
    import numpy as np
    import torch

    if not torch.cuda.is_available() and not SMOKE:
        print("bench-gpu: no CUDA GPU on this machine (torch.cuda.is_available() is False), so there is nothing to "
              "measure; run `make bench-gpu` on a machine with an NVIDIA GPU and a CUDA build of torch. "
              "(BENCH_GPU_SMOKE=1 checks the script on the CPU.)")
        return 0

    from workers.devices import peak_flops
    from workers.gpt.config import GPTConfig, TrainConfig, flops_per_token, param_count
    from workers.gpt.generate import generate
    from workers.gpt.train import train

    artifacts = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "var" / "artifacts"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(artifacts / "cache/torch-compile/inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(artifacts / "cache/torch-compile/triton"))

    if SMOKE:
        device, steps, batch = "cpu", 20, 2
        model_cfg = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=2, n_embd=64)
        name = "CPU (smoke run: a tiny model, not compiled)"
    else:
        device, steps, batch = "cuda", STEPS, BATCH
        model_cfg = GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True)
        name = torch.cuda.get_device_name(0)
    train_cfg = TrainConfig(
        batch_size=batch, grad_accum=1, max_steps=steps, learning_rate=6e-4, min_lr=6e-5, warmup_steps=10,
        weight_decay=0.1, beta2=0.95, grad_clip=1.0, eval_interval=steps, eval_iters=2, checkpoint_interval=0,
        device=device, dtype="float32" if SMOKE else "bfloat16", compile=not SMOKE, log_interval=10)
    # random GPT-2 ids: throughput does not depend on what the tokens say
    data = np.random.default_rng(0).integers(0, 50257 if not SMOKE else 512, 20_000_000 if not SMOKE else 50_000,
                                             dtype=np.uint16)
    peak = peak_flops(device)
    fpt = flops_per_token(model_cfg)
    print(f"bench-gpu on {name}: GPT-2 {param_count(model_cfg) / 1e6:.0f}M shape ({model_cfg.n_layer} layers, "
          f"{model_cfg.n_head} heads, n_embd {model_cfg.n_embd}, block {model_cfg.block_size}), batch {batch}, "
          f"{train_cfg.dtype}, compile={train_cfg.compile}; peak {peak / 1e12:.3g} TFLOP/s")

    reports = []
    started = time.monotonic()

    def on_step(r):
        reports.append(r)
        if len(reports) == 1:
            print(f"  first {r['step']} steps (compilation included) took {r['ms'] * r['step'] / 1000:.1f} s")

    state = train(model_cfg, train_cfg, data, peak_flops=peak, on_step=on_step,
                  should_stop=lambda: time.monotonic() - started > TRAIN_SECONDS)
    timed = reports[WARMUP_REPORTS:] or reports[-1:]
    ms = sum(r["ms"] for r in timed) / len(timed)
    tokens_per_s = batch * model_cfg.block_size / (ms / 1000)
    mfu = tokens_per_s * fpt / peak
    print(f"  train: {tokens_per_s:,.0f} tokens/s, {ms:.1f} ms/step, MFU {mfu:.1%} over steps "
          f"{timed[0]['step']}..{timed[-1]['step']} (loss {state.loss:.3f}"
          + (", stopped at the time limit" if state.stopped else "") + ")")
    if torch.cuda.is_available() and not SMOKE:
        print(f"  peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")

    model = state.model
    prompt = [int(t) for t in data[:16]]
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if not SMOKE else torch.autocast("cpu", enabled=False)
    with ctx:
        list(generate(model, prompt, max_new_tokens=8, temperature=0))  # warm up
        t0 = time.perf_counter()
        n = sum(1 for _ in generate(model, prompt, max_new_tokens=GEN_TOKENS, temperature=0))
        dt = time.perf_counter() - t0
    print(f"  generate (KV cache, batch 1, greedy): {n / dt:,.0f} tokens/s over {n} tokens")
    print(f"  total {time.monotonic() - started:.0f} s; target >= 45 % MFU on an H100/H200: "
          + ("n/a (smoke run)" if SMOKE else "ok" if mfu >= 0.45 else "MISSED"))
    grpo_steps(device, "CPU (smoke run)" if SMOKE else name)
    return 0


def grpo_steps(device: str, name: str) -> None:
    """Median seconds per GRPO step of the CPU benchmark's setting on `device`, and the ratio to GRPO_CPU_STEP_S."""
    import statistics
    import tempfile

    from tests.smollm2 import gguf_path
    from workers.gpt.chat import render_chat
    from workers.gpt.checkpoint import load_model
    from workers.gpt.formats.gguf import read_gguf
    from workers.gpt.formats.llmlab import write_checkpoint
    from workers.gpt.grpo import GRPOConfig, grpo
    from workers.gpt.tasks import task_problems

    if gguf_path() is None:
        print("  grpo: SmolLM2 is not installed (make install does it); skipped")
        return
    imported = read_gguf(gguf_path(), name="SmolLM2-135M-Instruct")
    tok = imported.tokenizer
    model = load_model(write_checkpoint(imported, Path(tempfile.mkdtemp())), device)
    stop_ids = [i for s, i in tok.special_tokens.items() if s in ("<|im_end|>", "<|endoftext|>")]

    def encode(p):
        return tok.encode(render_chat(tok.chat_template, [{"role": "user", "content": p.prompt}],
                                      add_generation_prompt=True), allow_special=True)

    steps = 3 if SMOKE else GRPO_STEPS
    problems = task_problems("arithmetic", split="train", n=200, difficulty=1, seed=0, instruction="short")
    cfg = GRPOConfig(steps=steps, prompts_per_step=4, group_size=8, learning_rate=1e-5, max_new_tokens=32,
                     temperature=1.0, beta=0.0, flat_steps=0, seed=0)
    state = grpo(model, problems, cfg, encode_prompt=encode,
                 decode=lambda ids: tok.decode([i for i in ids if i not in stop_ids]), stop_ids=stop_ids)
    timed = state.history[min(GRPO_WARMUP, len(state.history) - 1):]
    step_s = statistics.median(r["ms"] for r in timed) / 1000
    sampling = statistics.median(r["sample_s"] for r in timed)
    ratio = GRPO_CPU_STEP_S / step_s
    print(f"  grpo on {name}: SmolLM2-135M, 4 prompts x G 8, 32 new tokens: {step_s:.2f} s per step (median of "
          f"{len(timed)}; sampling {sampling:.2f} s of it), x{ratio:.1f} the 2-core CPU benchmark's "
          f"{GRPO_CPU_STEP_S} s; target >= 20x: " + ("n/a (smoke run)" if SMOKE else "ok" if ratio >= 20 else "MISSED"))


if __name__ == "__main__":
    sys.exit(main())
