"""Sampling inside the GRPO loop against bare batched KV-cached generation of the same model and batch (issue 12,
"Measured": target >= 0.8x). `make bench` prints:

    GRPO sampling, GPT 4x4x256, 2 problems x G=8, 32 new tokens: in the loop <tok/s> vs bare generate_batch
        <tok/s>: x<ratio> (target >= 0.8)

"In the loop" is what grpo() reports for its own sampling phase (sample_tokens / sample_s: generate_batch called by
the loop, with the loop's generator and stop handling). "Bare" is generate_batch() on the same policy and the same
rows, timed from on_step right after each loop step, so a busy moment on a shared machine hits both sides alike.
"""

import os
import statistics
import time

import pytest
import torch

from workers.gpt.config import GPTConfig
from workers.gpt.generate import generate_batch
from workers.gpt.grpo import GRPOConfig, grpo
from workers.gpt.model import GPT
from workers.gpt.tasks import task_problems

STEPS, G, NEW = 3, 8, 32
THREADS = int(os.environ.get("BENCH_GRPO_THREADS", 1))


@pytest.fixture(autouse=True)
def same_threads_for_both():
    """Both sides run with the same torch threads; one by default, because on a shared CPU a second thread
    spin-waiting for a busy core made the loop ten times slower (tests/gpt/conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)


def test_sampling_in_the_grpo_loop_against_bare_batched_generation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=256, n_layer=4, n_head=4, n_embd=256))
    problems = task_problems("arithmetic", n=2, difficulty=3, seed=0)

    def encode_prompt(p):  # a byte-level stand-in for a tokenizer: prompts of different lengths
        return list(p.prompt.encode()[:100])

    rows = [encode_prompt(p) for p in problems for _ in range(G)]
    bare = []

    def on_step(report):
        started = time.perf_counter()
        out = generate_batch(model, rows, max_new_tokens=NEW, temperature=1.0,
                             generator=torch.Generator().manual_seed(report["step"]))
        bare.append(sum(len(o) for o in out) / (time.perf_counter() - started))

    generate_batch(model, rows, max_new_tokens=4)  # warm up
    cfg = GRPOConfig(steps=STEPS, prompts_per_step=2, group_size=G, max_new_tokens=NEW, learning_rate=1e-7,
                     flat_steps=0)
    state = grpo(model, problems, cfg, encode_prompt=encode_prompt, decode=lambda ids: "".join(map(chr, ids)),
                 on_step=on_step)
    loop = statistics.median(r["sample_tokens_per_s"] for r in state.history)
    plain = statistics.median(bare)
    step_ms = statistics.median(r["ms"] for r in state.history)
    print(f"\nGRPO sampling, GPT 4x4x256, 2 problems x G={G}, {NEW} new tokens ({torch.get_num_threads()} torch "
          f"thread(s), median of {STEPS}): in the loop {loop:.0f} tok/s vs bare generate_batch {plain:.0f} tok/s: "
          f"x{loop / plain:.2f} (target >= 0.8) · whole step {step_ms:.0f} ms")
    assert all(r["sample_tokens"] == 2 * G * NEW for r in state.history)  # no stop ids: every row ran to NEW
