"""Issue 12's figure: GRPO on SmolLM2-135M-Instruct raises held-out accuracy. On a task chosen so the model starts
between 10 % and 60 % correct, within 20 minutes of GRPO held-out pass@1 on >= 200 problems rises by >= 10 points
and the 95 % Wilson intervals before and after do not overlap. `make bench` prints:

    GRPO on SmolLM2-135M-Instruct, <task> difficulty <d>, G=<G>: held-out pass@1 <before> % [<lo>, <hi>] ->
        <after> % [<lo>, <hi>] on <n> problems after <steps> steps in <minutes> min (<device>)
    step  reward  accuracy  length ...      (the curve, one line every few steps)

The same glue as the app (workers/reinforce.py heldout_accuracy; the chat template, the stop ids) on the library's
loop, without the database. BENCH_GRPO_TASK / _DIFFICULTY / _INSTRUCTION / _MINUTES / _DEVICE / _LR / _MAX_NEW choose
another setting; a task whose starting accuracy falls outside the band is skipped with the measured figure, so the
setting can be moved.

Why this setting (SmolLM2-135M-Instruct, greedy, raw answers read; 24-64 held-out problems each): two-digit
arithmetic ("48 + 87") is 0 % because the model cannot add them ("48 + 87 = 295"), not because of the parser;
letter counting of short words is ~79 % (it answers "1 time" to every word); one-digit arithmetic is ~46 % (about
a fifth of it by echoing an operand last, "0 + 9 is a fundamental concept") but only 40 such problems are held
out. Arithmetic level 1 (two numbers 0-30, + or a non-negative -) with the short instruction starts at ~21 %, has
283 held-out problems, and its answers are ~11 tokens ("21 + 15 = 36."), so a step is cheap; the wrong answers
are wrong sums ("20 + 4 = 6"): GRPO has to move the model toward the right sums its samples sometimes hold.
"""

import os
import time

import pytest
import torch

from tests.smollm2 import *  # noqa: F401,F403
from workers.gpt.checkpoint import load_model
from workers.gpt.grpo import GRPOConfig, grpo
from workers.gpt.tasks import task_problems
from workers.reinforce import heldout_accuracy

TASK = os.environ.get("BENCH_GRPO_TASK", "arithmetic")
INSTRUCTION = os.environ.get("BENCH_GRPO_INSTRUCTION", "short")
DIFFICULTY = int(os.environ.get("BENCH_GRPO_DIFFICULTY", 1))
MINUTES = float(os.environ.get("BENCH_GRPO_MINUTES", 20))
DEVICE = os.environ.get("BENCH_GRPO_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
N_HELDOUT = int(os.environ.get("BENCH_GRPO_HELDOUT", 280))  # of the 283 held out: narrower intervals
MAX_NEW = int(os.environ.get("BENCH_GRPO_MAX_NEW", 32))
LR = float(os.environ.get("BENCH_GRPO_LR", 1e-5))


def test_grpo_raises_held_out_accuracy_of_smollm2(smollm2_checkpoint):
    from workers.gpt.chat import render_chat

    path, tok = smollm2_checkpoint
    torch.manual_seed(0)
    model = load_model(path, DEVICE)
    stop_ids = [i for s, i in tok.special_tokens.items() if s in ("<|im_end|>", "<|endoftext|>")]
    template = tok.chat_template

    def encode_prompt(p):
        return tok.encode(render_chat(template, [{"role": "user", "content": p.prompt}], add_generation_prompt=True),
                          allow_special=True)

    def decode(ids):
        return tok.decode([i for i in ids if i not in stop_ids])

    train = task_problems(TASK, split="train", n=1000, difficulty=DIFFICULTY, seed=0, instruction=INSTRUCTION)
    held = task_problems(TASK, split="held_out", n=N_HELDOUT, difficulty=DIFFICULTY, seed=0, instruction=INSTRUCTION)
    measure = dict(encode_prompt=encode_prompt, decode=decode, stop_ids=stop_ids, max_new_tokens=MAX_NEW, k=1)
    before = heldout_accuracy(model, held, **measure)
    if not 0.10 <= before["pass1"] <= 0.60:
        pytest.skip(f"{TASK} difficulty {DIFFICULTY}: SmolLM2 starts at {100 * before['pass1']:.1f} % held-out "
                    f"pass@1, outside the 10-60 % band: choose another BENCH_GRPO_TASK / _DIFFICULTY")
    cfg = GRPOConfig(steps=10_000, prompts_per_step=4, group_size=8, learning_rate=LR, max_new_tokens=MAX_NEW,
                     temperature=1.0, beta=0.0, flat_steps=20, seed=0)  # full weights
    started = time.monotonic()
    curve = []
    state = grpo(model, train, cfg, encode_prompt=encode_prompt, decode=decode, stop_ids=stop_ids,
                 on_step=curve.append, should_stop=lambda: time.monotonic() - started > MINUTES * 60)
    minutes = (time.monotonic() - started) / 60
    after = heldout_accuracy(model, held, **measure)

    def fmt(r):
        return f"{100 * r['pass1']:.1f} % [{100 * r['pass1_low']:.1f}, {100 * r['pass1_high']:.1f}]"

    device = torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nGRPO on SmolLM2-135M-Instruct, {TASK} difficulty {DIFFICULTY} ({INSTRUCTION}), G={cfg.group_size}, "
          f"lr {LR:g}: held-out pass@1 {fmt(before)} -> {fmt(after)} on {after['n']} problems after {state.step} steps "
          f"in {minutes:.1f} min ({device}); median step "
          f"{sorted(r['ms'] for r in curve)[len(curve) // 2] / 1000:.1f} s")
    print("step  reward  accuracy  length  entropy")
    for r in curve[::max(1, len(curve) // 20)]:
        print(f"{r['step']:4d}  {r['reward_mean']:6.3f}  {r['accuracy']:8.3f}  {r['response_length']:6.1f}  "
              f"{r['entropy']:7.3f}")
    assert after["pass1"] - before["pass1"] >= 0.10, "held-out pass@1 rose by less than 10 points"
    assert after["pass1_low"] > before["pass1_high"], "the 95 % intervals before and after overlap"
