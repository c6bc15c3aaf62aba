"""
The configuration of a GRPO run (grpo.py). Standard library only, like config.py: the web side validates the form
with it without importing torch.
"""

import dataclasses
from dataclasses import dataclass

from .config import ConfigError

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


@dataclass
class GRPOConfig:
    steps: int = 100  # sampling steps; each is one optimizer step per iteration (num_iterations)
    prompts_per_step: int = 4  # distinct problems per step, each answered group_size times
    group_size: int = 8  # G: samples per problem. The group's mean reward is the baseline, so G >= 2 (TRL's 8)
    grad_accum: int = 1  # the step's problems are split into this many micro-batches, one backward() each
    learning_rate: float = 1e-5  # AdamW; constant after warmup_steps of linear warmup (TRL's default is 1e-6)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99  # as in DeepSeekMath's GRPO and nanochat's chat_rl
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 turns clipping off
    max_new_tokens: int = 64  # the longest answer; an answer that would outgrow the context is cut at the context
    temperature: float = 1.0  # sampling temperature; log-probabilities use the same one, as TRL does
    top_k: int | None = None
    top_p: float | None = None
    epsilon_low: float = 0.2  # the PPO clip range below 1 (DeepSeekMath: 0.2)
    epsilon_high: float = 0.2  # and above 1; DAPO's "clip-higher" raises it to 0.28
    beta: float = 0.0  # weight of the KL penalty to the reference model (DeepSeekMath: 0.04; TRL, DAPO, Dr. GRPO: 0)
    loss_type: str = "grpo"  # how token losses are averaged: see grpo.grpo_loss
    scale_rewards: bool = True  # divide advantages by the group's std (GRPO); False is Dr. GRPO's choice
    num_iterations: int = 1  # mu in the GRPO paper: policy updates per batch of samples (1: the ratio is exactly 1)
    format_reward: float = 0.0  # added to the reward of an answer written as <think>...</think><answer>...</answer>
    flat_steps: int = 10  # stop when every group's rewards were all equal for this many steps in a row; 0: never
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GRPOConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(unknown[0], f"unknown GRPO setting {unknown[0]!r}")
        return cls(**data)

    def validate(self):
        def positive(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"{name} ({value!r}) must be a positive integer")

        for name in ("steps", "prompts_per_step", "group_size", "grad_accum", "max_new_tokens", "num_iterations"):
            positive(name)
        if self.group_size < 2:
            raise ConfigError("group_size", f"group_size (G={self.group_size}) must be at least 2: GRPO judges each "
                                            f"answer against the other answers to the same problem, and a group of "
                                            f"one has nothing to compare with (its advantage is always 0). Try 8")
        if self.prompts_per_step % self.grad_accum:
            raise ConfigError("grad_accum", f"prompts_per_step ({self.prompts_per_step}) must be divisible by "
                                            f"grad_accum ({self.grad_accum}), so every micro-batch holds whole groups")
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate", f"learning_rate ({self.learning_rate}) must be > 0, e.g. 1e-5")
        if self.temperature <= 0:
            raise ConfigError("temperature", f"temperature ({self.temperature}) must be > 0: GRPO needs different "
                                             f"answers to compare, and greedy decoding gives G identical ones")
        for name in ("epsilon_low", "epsilon_high"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"{name} ({getattr(self, name)}) must be in [0, 1), e.g. 0.2")
        for name in ("beta", "weight_decay", "format_reward", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"{name} ({getattr(self, name)}) must be >= 0")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError("loss_type", f"loss_type ({self.loss_type!r}) must be one of {', '.join(LOSS_TYPES)}")
        if self.flat_steps < 0 or self.warmup_steps < 0:
            raise ConfigError("flat_steps" if self.flat_steps < 0 else "warmup_steps", "must be >= 0")
