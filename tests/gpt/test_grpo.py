import copy
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from workers.gpt.config import ConfigError, GPTConfig
from workers.gpt.grpo import GRPOConfig, _rollout, group_advantages, grpo, grpo_loss, token_logps
from workers.gpt.model import GPT
from workers.gpt.tasks import CheckResult, Problem

from .conftest import LLAMA

# a fixed batch: 2 problems x G=3 answers of different lengths, with their rewards
PROMPTS = [[1, 2, 3, 4], [5, 6]]
COMPLETIONS = [[7, 8, 9], [7], [10, 11, 12, 13, 14], [9, 9], [8, 7, 6, 5], [4]]
REWARDS = [[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]]
G = 3
EPS_LOW, EPS_HIGH, BETA, MAX_LEN = 0.2, 0.28, 0.04, 6


def perturbed(model, scale, seed):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


def reference_loss(model64, old64, ref64, loss_type, scale):
    """DeepSeekMath eq. 3 with the k3 KL of eq. 4, written directly in float64, one sequence at a time through the
    model without any padding, one token at a time in Python."""
    rows = [(PROMPTS[i // G], c) for i, c in enumerate(COMPLETIONS)]
    rewards = [r for group in REWARDS for r in group]

    def logps(model, prompt, completion):
        seq = torch.tensor([prompt + completion])
        logprobs = torch.log_softmax(model(seq[:, :-1])[0][0], dim=-1)  # (T-1, V)
        return [logprobs[len(prompt) - 1 + t, tok] for t, tok in enumerate(completion)]

    advantages = []
    for i in range(len(rows)):
        group = rewards[(i // G) * G:(i // G + 1) * G]
        mean = sum(group) / G
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (G - 1))  # unbiased, as TRL
        advantages.append((rewards[i] - mean) / (std + 1e-4) if scale else rewards[i] - mean)
    per_seq, total, n_tokens = [], 0.0, 0
    for (prompt, completion), a in zip(rows, advantages):
        lp = logps(model64, prompt, completion)
        with torch.no_grad():
            old, ref = logps(old64, prompt, completion), logps(ref64, prompt, completion)
        terms = []
        for t in range(len(completion)):
            ratio = torch.exp(lp[t] - old[t])
            surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - EPS_LOW, 1 + EPS_HIGH) * a)
            kl = torch.exp(ref[t] - lp[t]) - (ref[t] - lp[t]) - 1
            terms.append(-(surrogate - BETA * kl))
        per_seq.append(sum(terms) / len(completion))
        total = total + sum(terms)
        n_tokens += len(completion)
    if loss_type == "grpo":
        return sum(per_seq) / len(rows)
    if loss_type in ("bnpo", "dapo"):
        return total / n_tokens
    return total / (len(rows) * MAX_LEN)  # dr_grpo


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_loss_and_gradients_equal_a_float64_reference_of_the_paper(loss_type, scale, style):
    extra = LLAMA if style == "llama" else {}
    model = GPT(GPTConfig(**{**dict(vocab_size=16, block_size=16, n_layer=2, n_head=4, n_embd=32), **extra}))
    old_model, ref_model = perturbed(model, 0.05, 1), perturbed(model, 0.05, 2)  # ratios away from 1: clipping

    # ours, in float32, padded as the loop pads them
    rows = [p for p in PROMPTS for _ in range(G)]
    adv = group_advantages(torch.tensor(REWARDS), scale=scale).view(-1)
    r = _rollout(rows, COMPLETIONS, adv, "cpu")
    with torch.no_grad():
        old, ref = token_logps(old_model, r, 1.0)[0], token_logps(ref_model, r, 1.0)[0]
    logp, _ = token_logps(model, r, 1.0)
    loss, stats = grpo_loss(logp, old, ref, r.advantages, r.mask, beta=BETA, epsilon_low=EPS_LOW,
                            epsilon_high=EPS_HIGH, loss_type=loss_type, max_completion_length=MAX_LEN)
    loss.backward()
    assert 0 < stats["clip_ratio"] < 1  # the clip is exercised, on some tokens and not others

    model64, old64, ref64 = (copy.deepcopy(m).double() for m in (model, old_model, ref_model))
    for p in model64.parameters():
        p.grad = None
    expected = reference_loss(model64, old64, ref64, loss_type, scale)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    for (name, p), p64 in zip(model.named_parameters(), model64.parameters()):
        torch.testing.assert_close(p.grad.double(), p64.grad, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_equals_trls_grpo_trainer_on_the_same_tensors(loss_type):
    pytest.importorskip("trl")
    from trl import GRPOTrainer

    gen = torch.Generator().manual_seed(0)
    B, C = 6, 5
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0],
                         [1, 0, 0, 0, 0]], dtype=torch.float32)
    base = torch.randn(B, C, generator=gen).double() - 2
    old = base + 0.3 * torch.randn(B, C, generator=gen).double()
    ref = base + 0.3 * torch.randn(B, C, generator=gen).double()
    adv = group_advantages(torch.tensor(REWARDS), scale=True).view(-1).double()

    ours_logp = base.clone().requires_grad_(True)
    ours, _ = grpo_loss(ours_logp, old, ref, adv, mask, beta=BETA, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
                        loss_type=loss_type, max_completion_length=C)
    ours.backward()

    trl_logp = base.clone().requires_grad_(True)
    identity = SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction="sum": x, gather_for_metrics=lambda x: x,
                               num_processes=1, sync_gradients=True)
    fake = SimpleNamespace(  # just what GRPOTrainer._compute_loss reads, with our log-probs as its model's
        _get_per_token_logps_and_entropies=lambda *a, **k: (trl_logp, torch.zeros(B, C), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=BETA, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
        loss_type=loss_type, use_vllm=False, vllm_importance_sampling_correction=False,
        model=torch.nn.Module().train(), current_gradient_accumulation_steps=1, max_completion_length=C,
        _entropy_bonus_enabled=False, accelerator=identity, _metrics=defaultdict(lambda: defaultdict(list)),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
    )
    inputs = {"prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2),
              "completion_ids": torch.zeros(B, C, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    theirs = GRPOTrainer._compute_loss(fake, None, inputs)
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-10)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad, atol=1e-10, rtol=0)


def test_advantages_are_normalised_within_each_group():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]]))
    assert adv[0].tolist() == pytest.approx([0.866, -0.866, -0.866, 0.866], abs=1e-3)
    assert adv[1].tolist() == [0.0] * 4  # an all-equal group teaches nothing
    assert group_advantages(torch.tensor([[3.0, 1.0]]), scale=False).tolist() == [[1.0, -1.0]]  # Dr. GRPO


# ------------------------------------------------------------------------------------------------ the loop


DIGITS, QUESTION, STOP = range(10), 10, 11
TINY = dict(vocab_size=12, block_size=16, n_layer=1, n_head=2, n_embd=32)


def encode(problem):
    return [int(ch) if ch.isdigit() else QUESTION for ch in problem.prompt]


def decode(ids):
    return "".join(str(i) if i < 10 else " " for i in ids if i != STOP)


SEVEN = [Problem(f"{i}?" * (1 + i % 3), "7", "upload", "numeric") for i in range(8)]  # prompts of 2 to 6 tokens


def test_a_tiny_model_learns_to_answer_7():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    cfg = GRPOConfig(steps=40, prompts_per_step=4, group_size=8, grad_accum=2, learning_rate=1e-2,
                     max_new_tokens=1, beta=0.04, flat_steps=5, seed=0)
    groups = []
    state = grpo(model, SEVEN, cfg, encode_prompt=encode, decode=decode, stop_ids=[STOP], on_group=groups.append)
    accuracy = [r["accuracy"] for r in state.history]
    assert sum(accuracy[:3]) / 3 < 0.3 and accuracy[-1] == 1.0, accuracy  # about 1/12 by chance at first
    # once every answer is right, the groups are flat and there is nothing left to learn: the guard ends the run
    assert state.stopped and "every answer scored 1" in state.stop_reason and state.step < 40
    assert state.history[-1]["kl"] > 0  # it moved away from where it started
    assert len(groups) == state.step * 4 and len(groups[-1]["samples"]) == 8
    assert groups[-1]["samples"][0] == {"text": "7", "reward": 1.0, "correct": True, "length": 1,
                                        "truncated": False}


def test_every_step_reports_the_dashboard_metrics():
    model = GPT(GPTConfig(**TINY))
    reports = []
    grpo(model, SEVEN, GRPOConfig(steps=2, prompts_per_step=2, group_size=4, max_new_tokens=3, flat_steps=0),
         encode_prompt=encode, decode=decode, on_step=reports.append)
    r = reports[-1]
    for key in ("reward_mean", "accuracy", "reward_std", "response_length", "entropy", "loss", "grad_norm",
                "sample_tokens_per_s", "truncated", "flat_groups"):
        assert r[key] is not None and math.isfinite(r[key]), key
    assert r["kl"] is None  # beta = 0: no reference model, nothing measured
    assert r["response_length"] == 3  # no stop ids: every answer runs to max_new_tokens
    assert 0 < r["entropy"] <= math.log(12) + 1e-6


def test_only_lora_weights_change_with_a_peft_policy():
    peft = pytest.importorskip("peft")
    model = GPT(GPTConfig(**TINY))
    policy = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    state = grpo(policy, SEVEN, GRPOConfig(steps=3, prompts_per_step=2, group_size=4, max_new_tokens=2,
                                           learning_rate=1e-2, beta=0.1, flat_steps=0),
                 encode_prompt=encode, decode=decode)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all("lora_" in n for n in changed)
    assert state.history[-1]["kl"] >= 0  # the reference is the base model under disable_adapter()


def test_a_group_of_one_is_refused_with_why():
    with pytest.raises(ConfigError, match="nothing to compare") as e:
        grpo(GPT(GPTConfig(**TINY)), SEVEN, GRPOConfig(group_size=1), encode_prompt=encode, decode=decode)
    assert e.value.field == "group_size"


def test_a_nan_reward_is_refused():
    with pytest.raises(ValueError, match="is nan: a reward must be a finite number"):
        grpo(GPT(GPTConfig(**TINY)), SEVEN, GRPOConfig(steps=1, prompts_per_step=1, group_size=2),
             encode_prompt=encode, decode=decode,
             reward_fn=lambda p, text: CheckResult(float("nan"), False, None, False, "?"))


def test_a_run_whose_rewards_stay_flat_stops_with_a_message():
    never = lambda p, text: CheckResult(0.0, False, None, False, "wrong")  # noqa: E731
    state = grpo(GPT(GPTConfig(**TINY)), SEVEN, GRPOConfig(steps=50, prompts_per_step=2, group_size=2,
                                                           max_new_tokens=1, flat_steps=3),
                 encode_prompt=encode, decode=decode, reward_fn=never)
    assert state.stopped and state.step == 3
    assert "every answer scored 0" in state.stop_reason and "too hard" in state.stop_reason


def test_answers_longer_than_the_context_are_cut_at_the_context():
    groups = []
    long_prompt = [Problem("1?" * 6, "7", "upload", "numeric")]  # 12 of 16 positions
    state = grpo(GPT(GPTConfig(**TINY)), long_prompt, GRPOConfig(steps=1, prompts_per_step=1, group_size=4,
                                                                 max_new_tokens=10, flat_steps=0),
                 encode_prompt=encode, decode=decode, on_group=groups.append)
    assert [s["length"] for s in groups[0]["samples"]] == [4] * 4
    assert state.history[0]["truncated"] == 4


def test_a_prompt_that_fills_the_context_is_refused():
    with pytest.raises(ValueError, match="leaves no room for an answer"):
        grpo(GPT(GPTConfig(**TINY)), [Problem("1?" * 8, "7", "upload")], GRPOConfig(), encode_prompt=encode,
             decode=decode)


def test_a_config_that_splits_groups_across_micro_batches_is_refused():
    with pytest.raises(ConfigError, match="divisible by grad_accum"):
        GRPOConfig(prompts_per_step=3, grad_accum=2).validate()
    with pytest.raises(ConfigError, match="greedy decoding gives G identical"):
        GRPOConfig(temperature=0).validate()


def test_num_iterations_makes_that_many_updates_per_batch_of_samples():
    model = GPT(GPTConfig(**TINY))
    cfg = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, max_new_tokens=3, num_iterations=3,
                     learning_rate=1e-2, flat_steps=0)
    rewards = iter(range(10**6))  # always different rewards: every group has something to learn
    state = grpo(model, SEVEN, cfg, encode_prompt=encode, decode=decode,
                 reward_fn=lambda p, text: CheckResult(float(next(rewards) % 3), False, None, False, ""))
    adam_steps = {int(s["step"]) for s in state.optimizer.state.values()}
    assert adam_steps == {2 * 3}  # num_iterations optimizer steps per sampling step
    assert all(math.isfinite(r["loss"]) for r in state.history)


def test_should_stop_ends_the_run_before_the_next_step():
    calls = []
    state = grpo(GPT(GPTConfig(**TINY)), SEVEN, GRPOConfig(steps=10, prompts_per_step=1, group_size=2,
                                                           max_new_tokens=1, flat_steps=0),
                 encode_prompt=encode, decode=decode, should_stop=lambda: len(calls) >= 2, on_step=calls.append)
    assert state.stopped and state.step == 2 and state.stop_reason is None


def test_a_config_round_trips_and_names_an_unknown_setting():
    cfg = GRPOConfig(group_size=4, beta=0.04, loss_type="dr_grpo", scale_rewards=False)
    assert GRPOConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown GRPO setting 'kl'") as e:
        GRPOConfig.from_dict({"kl": 0.1})
    assert e.value.field == "kl"
    with pytest.raises(ConfigError, match="loss_type"):
        GRPOConfig(loss_type="ppo").validate()
