"""
Group Relative Policy Optimization, the reinforcement learning of DeepSeekMath and DeepSeek-R1, as a plain loop you
can step through (like train.py; after nanochat's chat_rl and TRL's GRPOTrainer).

One step: take a few problems; sample G answers to each from the current policy (batched, KV-cached: generate_batch);
score every answer with the task's checker; an answer's advantage is how much better its reward is than its
group's mean; raise the probability of the sampled tokens of answers that beat their group and lower the others,
with PPO's clipped ratio so one step cannot move the policy far, and optionally a KL penalty to the frozen starting
model. References:
1) DeepSeekMath (GRPO): Shao et al. 2024, https://arxiv.org/abs/2402.03300, eq. 3 (objective) and eq. 4 (KL, k3)
2) DAPO: Yu et al. 2025, https://arxiv.org/abs/2503.14476 (token-level loss, clip-higher)
3) Dr. GRPO: Liu et al. 2025, https://arxiv.org/abs/2503.20783 (no length or std normalisation)
4) TRL's GRPOTrainer._compute_loss (loss types "grpo", "bnpo", "dr_grpo", "dapo"), which tests/gpt/test_grpo.py
   compares with on the same tensors.

grpo() knows nothing about Django. It reports through callbacks (on_step with the dashboard's metrics, on_group with
each group's answers for the UI), asks should_stop() before every step, and returns the GRPOState. The policy is any
nn.Module around a workers.gpt GPT: the GPT itself (full fine-tuning) or a peft model with LoRA adapters (the caller
wraps it; only parameters with requires_grad are trained).
"""

import copy
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from .generate import base_gpt, forward_rows, generate_batch, left_pad
from .grpo_config import GRPOConfig
from .tasks import Problem, check


@dataclass
class GRPOState:
    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    config: GRPOConfig
    step: int = 0  # sampling steps completed
    stopped: bool = False  # should_stop() or the flat-reward guard ended the run early
    stop_reason: str | None = None  # why, in a sentence for the UI (None: should_stop() or ran to the end)
    flat_run: int = 0  # consecutive steps in which every group's rewards were all equal
    history: list[dict] = field(default_factory=list)  # every on_step report
    # where the loop is in its seeded streams, so a resumed run samples what an uninterrupted one would have
    order_rng: random.Random | None = None  # shuffles the problems, once per epoch
    sample_gen: torch.Generator | None = None  # generate_batch's sampling
    queue: list[int] = field(default_factory=list)  # indices of this epoch's problems not yet drawn

    def state_dict(self) -> dict:
        """Everything but the policy's weights (the caller saves those with its checkpoint) that a resumed grpo()
        needs to continue exactly as if it had never stopped: the optimizer, the RNG streams, the epoch's queue."""
        return {"step": self.step, "flat_run": self.flat_run, "optimizer": self.optimizer.state_dict(),
                "order_rng": _rng_state(self.order_rng), "sample_gen": self.sample_gen.get_state().tolist(),
                "queue": list(self.queue)}


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


@dataclass
class Rollout:
    """One micro-batch of sampled answers, as tensors for the loss. B rows = problems x G, laid out as
    [left pads | prompt | completion | right pads]; the completion columns are the last C."""
    idx: torch.Tensor  # (B, P + C) token ids
    positions: torch.Tensor  # (B, P + C) each token's position in its own row
    valid: torch.Tensor  # (B, P + C) bool: a real token
    mask: torch.Tensor  # (B, C) float: 1 on sampled completion tokens
    advantages: torch.Tensor  # (B,)
    old_logp: torch.Tensor | None = None  # (B, C) the sampling policy's log-probs (num_iterations > 1)
    ref_logp: torch.Tensor | None = None  # (B, C) the reference model's log-probs (beta > 0)


def grpo(policy: torch.nn.Module, problems: list[Problem], config: GRPOConfig, *, encode_prompt, decode,
         stop_ids=(), reference: torch.nn.Module | None = None, reward_fn=None, on_step=None, on_group=None,
         should_stop=None, on_state=None, resume: dict | None = None) -> GRPOState:
    """Train `policy` with GRPO on `problems` and return the final GRPOState.

    encode_prompt(problem) -> token ids the model answers (the caller applies the chat template)
    decode(ids) -> text the checker reads; stop_ids end an answer (e.g. the end-of-turn token)
    reference   the frozen model of the KL penalty; by default the starting policy: for a peft model its adapters
                switched off (as TRL does), otherwise a frozen copy. Only used when config.beta > 0
    reward_fn(problem, text) -> tasks.CheckResult; default tasks.check with config.format_reward
    on_step(report)  after every step: {"step", "reward_mean", "accuracy", "reward_std", "response_length",
                     "kl", "entropy", "loss", "clip_ratio", "grad_norm", "lr", "truncated", "flat_groups", "ms",
                     "sample_s", "sample_tokens", "sample_tokens_per_s"}
    on_group(report) for every group of every step: {"step", "prompt", "answer", "samples": [{"text", "reward",
                     "correct", "length", "truncated"}]}
    should_stop()    checked before every step; True ends the run with state.stopped set
    on_state(state)  after every step's reports: the caller may checkpoint (policy weights + state.state_dict())
    resume           a GRPOState.state_dict() from a checkpoint of the same run, with the policy's weights already
                     loaded: the loop continues from that step as if it had never stopped
    """
    config.validate()
    if not problems:
        raise ValueError("no problems to train on: choose a task with a train split, or upload problems")
    cfg = config
    gpt = base_gpt(policy)
    block_size = gpt.config.block_size
    device = gpt.lm_head.weight.device
    prompt_ids = {}  # the prompt's ids, encoded once per distinct prompt
    for p in problems:
        if p.prompt not in prompt_ids:
            ids = list(encode_prompt(p))
            if not 0 < len(ids) < block_size:
                raise ValueError(f"the prompt {p.prompt[:60]!r} is {len(ids)} tokens and leaves no room for an "
                                 f"answer in the model's context ({block_size} tokens): shorten it")
            prompt_ids[p.prompt] = ids
    if reward_fn is None:
        def reward_fn(problem, text):
            return check(problem, text, format_reward=cfg.format_reward)

    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters: unfreeze them, or add LoRA adapters with peft")
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    ref_context = nullcontext
    if cfg.beta > 0 and reference is None:
        if hasattr(policy, "disable_adapter"):
            reference, ref_context = policy, policy.disable_adapter  # the base weights under the adapters
        else:
            reference = copy.deepcopy(policy).requires_grad_(False)
    state = GRPOState(policy, optimizer, cfg, order_rng=random.Random(cfg.seed),
                      sample_gen=torch.Generator().manual_seed(cfg.seed))
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        version, internal, gauss = resume["order_rng"]
        state.order_rng.setstate((version, tuple(internal), gauss))
        state.sample_gen.set_state(torch.tensor(resume["sample_gen"], dtype=torch.uint8))
        state.step, state.flat_run = int(resume["step"]), int(resume["flat_run"])
        state.queue = [int(i) for i in resume["queue"]]
        if any(not 0 <= i < len(problems) for i in state.queue):
            raise ValueError("the checkpoint's problem queue does not fit these problems: resume with the run's own "
                             "task set, or start a new run")
    order_rng, sample_gen, queue = state.order_rng, state.sample_gen, state.queue
    # dropout off throughout (TRL's disable_dropout): with it on, the ratio would not be 1 on the first update
    was_training = policy.training
    policy.eval()
    try:
        while state.step < cfg.steps:
            if should_stop is not None and should_stop():
                state.stopped = True
                break
            step = state.step + 1
            lr = cfg.learning_rate * min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else cfg.learning_rate
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()

            # 1) sample G answers to each problem of the step, one micro-batch at a time, and score them
            batch = []
            while len(batch) < cfg.prompts_per_step:
                if not queue:
                    queue.extend(range(len(problems)))
                    order_rng.shuffle(queue)  # every problem once per epoch, in a seeded order
                batch.append(problems[queue.pop()])
            per_micro = cfg.prompts_per_step // cfg.grad_accum
            rollouts, samples, sample_s, sample_tokens = [], [], 0.0, 0
            for m in range(cfg.grad_accum):
                chunk = batch[m * per_micro:(m + 1) * per_micro]
                rows = [prompt_ids[p.prompt] for p in chunk for _ in range(cfg.group_size)]
                ts = time.perf_counter()
                completions = generate_batch(policy, rows, max_new_tokens=cfg.max_new_tokens,
                                             temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                             stop_ids=stop_ids, generator=sample_gen)
                sample_s += time.perf_counter() - ts
                sample_tokens += sum(len(c) for c in completions)
                rewards = []
                for i, (p, c) in enumerate(zip([p for p in chunk for _ in range(cfg.group_size)], completions)):
                    text = decode(c)
                    result = reward_fn(p, text)
                    if not math.isfinite(result.reward):
                        raise ValueError(f"the reward of an answer to {p.prompt[:60]!r} is {result.reward}: a reward "
                                         f"must be a finite number; fix the reward function or the checker")
                    truncated = len(rows[i]) + len(c) >= block_size and not (c and c[-1] in stop_ids)
                    samples.append((p, text, result, len(c), truncated))
                    rewards.append(result.reward)
                rewards = torch.tensor(rewards, dtype=torch.float32).view(len(chunk), cfg.group_size)  # (N, G)
                advantages = group_advantages(rewards, scale=cfg.scale_rewards).view(-1)  # (N*G,)
                rollouts.append(_rollout(rows, completions, advantages, device))

            # the sampling policy's and the reference's log-probs, before any update
            with torch.no_grad():
                for r in rollouts:
                    if cfg.num_iterations > 1:
                        r.old_logp = token_logps(policy, r, cfg.temperature)[0]
                    if cfg.beta > 0:
                        with ref_context():
                            r.ref_logp = token_logps(reference, r, cfg.temperature)[0]

            # 2) the policy update: num_iterations passes over the samples, grad_accum backward()s each
            n_tokens = sum(float(r.mask.sum()) for r in rollouts)  # DAPO normalises by the step's tokens
            stats = {"loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_ratio": 0.0}
            grad_norm = torch.zeros(())
            for it in range(cfg.num_iterations):
                for r in rollouts:
                    logp, entropy = token_logps(policy, r, cfg.temperature, with_entropy=it == 0)
                    old = r.old_logp if r.old_logp is not None else logp.detach()
                    loss, s = grpo_loss(logp, old, r.ref_logp, r.advantages, r.mask, beta=cfg.beta,
                                        epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_high,
                                        loss_type=cfg.loss_type, max_completion_length=cfg.max_new_tokens,
                                        num_items=n_tokens)
                    if cfg.loss_type != "dapo":
                        loss = loss / cfg.grad_accum  # the mean over micro-batches; DAPO's normaliser spans them
                    loss.backward()
                    if it == 0:
                        share = float(r.mask.sum()) / max(n_tokens, 1.0)  # token-weighted means over the step
                        stats["loss"] += loss.item()
                        stats["kl"] += s["kl"] * share
                        stats["clip_ratio"] += s["clip_ratio"] * share
                        stats["entropy"] += masked_mean(entropy, r.mask).item() * share
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.step = step

            # 3) report, and stop a run that has nothing to learn from
            groups = [samples[i:i + cfg.group_size] for i in range(0, len(samples), cfg.group_size)]
            group_rewards = torch.tensor([[s[2].reward for s in g] for g in groups], dtype=torch.float64)
            flat = int((group_rewards.max(dim=1).values == group_rewards.min(dim=1).values).sum())
            state.flat_run = state.flat_run + 1 if flat == len(groups) else 0
            report = {
                "step": step,
                "reward_mean": group_rewards.mean().item(),
                "accuracy": sum(s[2].correct for s in samples) / len(samples),
                "reward_std": group_rewards.std(dim=1, correction=0).mean().item(),  # within groups
                "response_length": sum(s[3] for s in samples) / len(samples),  # tokens
                "kl": stats["kl"] if cfg.beta > 0 else None,
                "entropy": stats["entropy"],
                "loss": stats["loss"],
                "clip_ratio": stats["clip_ratio"],
                "grad_norm": grad_norm.item(),
                "lr": lr,
                "truncated": sum(s[4] for s in samples),  # answers cut at the context
                "flat_groups": flat,
                "ms": (time.perf_counter() - t0) * 1000,
                "sample_s": sample_s,
                "sample_tokens": sample_tokens,
                "sample_tokens_per_s": sample_tokens / sample_s if sample_s > 0 else None,
            }
            state.history.append(report)
            if on_group is not None:
                for g in groups:
                    on_group({"step": step, "prompt": g[0][0].prompt, "answer": g[0][0].answer, "samples": [
                        {"text": text, "reward": res.reward, "correct": res.correct, "length": n, "truncated": cut}
                        for _, text, res, n, cut in g]})
            if on_step is not None:
                on_step(report)
            if on_state is not None:
                on_state(state)
            if cfg.flat_steps and state.flat_run >= cfg.flat_steps:
                value = group_rewards[0, 0].item() if bool((group_rewards == group_rewards[0, 0]).all()) else None
                which = f" (every answer scored {value:g})" if value is not None else ""
                state.stopped = True
                state.stop_reason = (
                    f"stopped after {state.flat_run} steps in which every group's answers had equal rewards{which}: "
                    f"GRPO learns only from differences within a group, so nothing was being learned. The task is "
                    f"too hard for this model (no answer is ever right) or too easy (all are): change the "
                    f"difficulty, the model, max_new_tokens or the temperature")
                break
    finally:
        policy.train(was_training)
    return state


def group_advantages(rewards: torch.Tensor, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(N, G) rewards -> (N, G) advantages: each reward minus its group's mean (GRPO's baseline, in place of PPO's
    value model), divided by the group's standard deviation when `scale` (DeepSeekMath, TRL's scale_rewards="group";
    Dr. GRPO drops the division, which favours groups whose rewards barely differ). The std is the unbiased one and
    eps=1e-4 keeps an all-equal group at 0, both as in TRL."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (rewards.std(dim=1, keepdim=True) + eps)
    return adv


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, *, beta: float = 0.0, epsilon_low: float = 0.2,
              epsilon_high: float = 0.2, loss_type: str = "grpo", max_completion_length: int | None = None,
              num_items: float | None = None):
    """The clipped-ratio policy loss over sampled tokens, and a few statistics.

    logp, old_logp, ref_logp (B, C): log-probabilities of the sampled tokens under the policy being trained, the
    policy that sampled them, and the reference model (None when beta is 0). advantages (B,); mask (B, C) 1 on
    completion tokens. Per token (DeepSeekMath eq. 3, token-level ratio as in PPO):
        ratio = exp(logp - old_logp)
        loss_t = -min(ratio * A, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A) + beta * KL_t
        KL_t = exp(ref - logp) - (ref - logp) - 1   (the k3 estimator of DeepSeekMath eq. 4: unbiased, >= 0)
    averaged over tokens as loss_type says:
        "grpo"     mean over each answer's tokens, then over answers (DeepSeekMath's 1/|o_i|, TRL's "grpo"). A long
                   wrong answer is penalised less per token than a short one: the length bias Dr. GRPO points out
        "bnpo"     mean over all tokens of the micro-batch (TRL's "bnpo")
        "dapo"     sum over tokens / num_items, the token count of the whole step across micro-batches (DAPO's
                   token-level loss; TRL's "dapo")
        "dr_grpo"  sum over tokens / (B * max_completion_length): a constant, so no length bias (Dr. GRPO)
    """
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)  # (B, C)
    adv = advantages[:, None]  # (B, 1)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (B, C)
    kl = None
    if beta != 0.0:
        kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1  # (B, C)
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / max(num_items if num_items is not None else float(mask.sum()), 1.0)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type 'dr_grpo' needs max_completion_length")
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}: use grpo, bnpo, dapo or dr_grpo")
    with torch.no_grad():
        is_clipped = ((ratio < 1 - epsilon_low) & (adv < 0)) | ((ratio > 1 + epsilon_high) & (adv > 0))
        stats = {"clip_ratio": masked_mean(is_clipped.to(mask.dtype), mask).item(),
                 "kl": masked_mean(kl, mask).item() if kl is not None else 0.0}
    return loss, stats


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def token_logps(model, r: Rollout, temperature: float = 1.0, with_entropy: bool = False):
    """Log-probabilities (B, C) of the completion tokens of rollout r under `model`, from logits divided by the
    sampling temperature (as TRL does), and the per-token entropy (B, C) of that distribution (None unless asked)."""
    C = r.mask.size(1)
    # the logits at column j predict the token at column j + 1: completions are predicted by the C columns
    # ending one before the last
    logits = forward_rows(model, r.idx[:, :-1], r.positions[:, :-1], r.valid[:, :-1], last=C)  # (B, C, V)
    logits = logits.float() / temperature
    logprobs = F.log_softmax(logits, dim=-1)  # (B, C, V)
    logp = logprobs.gather(-1, r.idx[:, -C:, None])[..., 0]  # (B, C)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logprobs.exp() * logprobs).sum(-1)  # (B, C)
    return logp, entropy


def _rollout(prompts: list[list[int]], completions: list[list[int]], advantages: torch.Tensor, device) -> Rollout:
    P = max(len(p) for p in prompts)
    C = max(1, max(len(c) for c in completions))
    idx, positions, valid = left_pad(prompts, P)  # (B, P) each
    comp = torch.zeros(len(prompts), C, dtype=torch.long)
    mask = torch.zeros(len(prompts), C)
    for b, c in enumerate(completions):
        comp[b, :len(c)] = torch.tensor(c, dtype=torch.long)
        mask[b, :len(c)] = 1.0
    lengths = torch.tensor([len(p) for p in prompts])[:, None]  # (B, 1)
    comp_pos = lengths + torch.arange(C)[None, :]  # (B, C)
    # a right pad sits past the row's end: give it the row's last real position so it stays inside the context
    last_pos = lengths + mask.sum(1, keepdim=True).long() - 1  # (B, 1)
    comp_pos = torch.where(mask.bool(), comp_pos, last_pos.clamp(min=0))
    return Rollout(
        idx=torch.cat([idx, comp], dim=1).to(device),
        positions=torch.cat([positions, comp_pos], dim=1).to(device),
        valid=torch.cat([valid, mask.bool()], dim=1).to(device),
        mask=mask.to(device),
        advantages=advantages.to(device),
    )
