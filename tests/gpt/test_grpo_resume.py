"""A GRPO run stopped and resumed from its state (weights + GRPOState.state_dict()) is the uninterrupted run."""

import copy
import json

import torch

from workers.gpt.config import GPTConfig
from workers.gpt.grpo import GRPOConfig, grpo
from workers.gpt.model import GPT

from .test_grpo import SEVEN, STOP, TINY, decode, encode

CFG = dict(steps=6, prompts_per_step=3, group_size=4, max_new_tokens=2, learning_rate=1e-2, beta=0.05,
           flat_steps=0, seed=3)  # 3 problems a step over 8: epochs end mid-step, so the queue must be restored


def test_a_resumed_run_equals_the_uninterrupted_one():
    torch.manual_seed(0)
    start = GPT(GPTConfig(**TINY))
    reference = copy.deepcopy(start).requires_grad_(False)

    whole = copy.deepcopy(start)
    full = grpo(whole, SEVEN, GRPOConfig(**CFG), encode_prompt=encode, decode=decode, stop_ids=[STOP],
                reference=reference)

    saved = {}
    first = copy.deepcopy(start)

    def keep(state):
        if state.step == 4:
            # through JSON and back for everything but tensors, as a checkpoint on disk would
            sd = state.state_dict()
            saved["weights"] = {k: v.clone() for k, v in state.policy.state_dict().items()}
            saved["optimizer"] = copy.deepcopy(sd.pop("optimizer"))
            saved["rest"] = json.loads(json.dumps(sd))

    grpo(first, SEVEN, GRPOConfig(**{**CFG, "steps": 4}), encode_prompt=encode, decode=decode, stop_ids=[STOP],
         reference=reference, on_state=keep)
    resumed = GPT(GPTConfig(**TINY))
    resumed.load_state_dict(saved["weights"])
    second = grpo(resumed, SEVEN, GRPOConfig(**CFG), encode_prompt=encode, decode=decode, stop_ids=[STOP],
                  reference=reference, resume=saved["rest"] | {"optimizer": saved["optimizer"]})

    assert second.step == 6 and [r["step"] for r in second.history] == [5, 6]
    for key in ("reward_mean", "loss", "kl", "response_length"):
        assert [r[key] for r in second.history] == [r[key] for r in full.history[4:]], key
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
