"""
Evaluating a model, three ways, after EleutherAI's lm-evaluation-harness:

- token_loss: mean cross-entropy and perplexity on a token array (a corpus split), every token scored once;
- multiple_choice: log-likelihood of each option given the context (the HellaSwag / ARC method): `acc` picks the
  option with the largest sum of log-probabilities of its tokens, `acc_norm` divides that sum by the option's length
  in characters first, so long options are not penalised for having more tokens;
- generate_and_check: the model answers each problem greedily (KV-cached, generate.py), stopping at end-of-turn,
  and a checker callable says whether the answer is right.

Accuracy comes with a 95 % Wilson score interval (wilson_interval, plain math): with a few hundred problems the
interval is several points wide, and a table of evals should show that. No Django here; the worker stores the dicts
these functions return.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from .generate import generate
from .model import GPT
from .tokenizers import Tokenizer


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval for a proportion successes / n (95 % by default). Unlike the normal approximation
    p +- z*sqrt(p(1-p)/n) it stays inside [0, 1] and is not of width 0 at p = 0 or 1. n = 0 gives (0, 1)."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes ({successes}) must be between 0 and n ({n})")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy(correct: list[bool]) -> dict:
    """{"n", "correct", "accuracy", "low", "high"}: the share right and its 95 % Wilson interval."""
    k, n = sum(bool(c) for c in correct), len(correct)
    low, high = wilson_interval(k, n)
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "low": low, "high": high}


def _device(model: GPT) -> torch.device:
    return model.lm_head.weight.device


# ----------------------------------------------------------------------------------------------------------------------
# loss and perplexity


@torch.no_grad()
def token_loss(model: GPT, tokens, *, batch_size: int = 8, max_tokens: int | None = None) -> dict:
    """Mean next-token cross-entropy over `tokens` (a 1-D array, memmap or tensor of ids) and its exp, the
    perplexity. The array is cut into consecutive windows of block_size + 1 tokens overlapping by one, so every
    token after the first is predicted exactly once (with less context at the start of each window than a sliding
    evaluation would give; it is the number nanoGPT's eval reports on average). max_tokens scores only the start."""
    if isinstance(tokens, torch.Tensor):
        data = tokens[:max_tokens or None].to(torch.long).cpu()
    else:
        data = torch.from_numpy(np.array(tokens[:max_tokens or None], dtype=np.int64))  # a copy: memmaps are read-only
    T = model.config.block_size
    if data.numel() < 2:
        raise ValueError(f"need at least 2 tokens to score a prediction, got {data.numel()}")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    starts = list(range(0, data.numel() - 1, T))
    try:
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            n = max(min(T, data.numel() - 1 - s) for s in chunk)
            x = torch.zeros(len(chunk), n, dtype=torch.long)
            y = torch.full((len(chunk), n), -1, dtype=torch.long)  # -1: past the end of the data, not scored
            for b, s in enumerate(chunk):
                m = min(T, data.numel() - 1 - s)
                x[b, :m], y[b, :m] = data[s:s + m], data[s + 1:s + 1 + m]
            logits, _ = model(x.to(_device(model)))
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.to(logits.device).view(-1),
                                   ignore_index=-1, reduction="sum")
            total += loss.item()
            count += int((y != -1).sum())
    finally:
        model.train(was_training)
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(mean), "n_tokens": count}


# ----------------------------------------------------------------------------------------------------------------------
# multiple choice by log-likelihood


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness makes them: encode context + continuation whole and
    split at the context's length, so the continuation is tokenized as it would be in running text (with BPE, " the"
    after a word is one token, not a space and a word)."""
    context_ids = tokenizer.encode(context)
    whole = tokenizer.encode(context + continuation)
    if whole[:len(context_ids)] == context_ids and len(whole) > len(context_ids):
        return context_ids, whole[len(context_ids):]
    return context_ids, tokenizer.encode(continuation)  # a merge crossed the boundary: fall back to separate pieces


@torch.no_grad()
def loglikelihood(model: GPT, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
    """(sum of log p(continuation token | everything before it), whether each continuation token was the greedy
    choice). The input is cropped from the left to block_size; the continuation must fit in it."""
    if not continuation_ids:
        raise ValueError("the continuation is empty: a choice must have at least one token")
    if not context_ids:
        raise ValueError("the context is empty: the first token of a choice needs something to be predicted from "
                         "(start the context with the end-of-text token)")
    T = model.config.block_size
    if len(continuation_ids) > T:
        raise ValueError(f"a choice of {len(continuation_ids)} tokens does not fit in block_size {T}")
    ids = (context_ids + continuation_ids)[-(T + 1):]
    x = torch.tensor([ids[:-1]], dtype=torch.long, device=_device(model))  # (1, T')
    logits, _ = model(x)
    logprobs = F.log_softmax(logits[0].float(), dim=-1)  # (T', V)
    n = len(continuation_ids)
    target = torch.tensor(ids[-n:], dtype=torch.long, device=logprobs.device)  # (n,)
    picked = logprobs[-n:].gather(1, target[:, None])[:, 0]  # (n,): position t predicts token t + 1
    greedy = bool((logprobs[-n:].argmax(dim=-1) == target).all())
    return picked.sum().item(), greedy


def multiple_choice(model: GPT, tokenizer: Tokenizer, problems: list[dict]) -> dict:
    """Score problems {"context": str, "choices": [str, ...], "answer": int} by log-likelihood.

    Returns {"acc": accuracy(...), "acc_norm": accuracy(...), "results": [per problem: "loglikelihoods",
    "pred", "pred_norm", "correct", "correct_norm"]}. acc_norm divides each sum by len(choice) in characters, as
    lm-evaluation-harness does (bytes there; characters here, the same for ASCII)."""
    was_training = model.training
    model.eval()
    results = []
    try:
        for k, p in enumerate(problems):
            choices, answer = p["choices"], p["answer"]
            if not (isinstance(answer, int) and 0 <= answer < len(choices)):
                raise ValueError(f"problem {k}: answer {answer!r} is not an index into its {len(choices)} choices")
            lls = []
            for choice in choices:
                context_ids, choice_ids = encode_pair(tokenizer, p["context"], choice)
                lls.append(loglikelihood(model, context_ids, choice_ids)[0])
            normed = [ll / max(1, len(c)) for ll, c in zip(lls, choices)]
            pred = max(range(len(lls)), key=lls.__getitem__)
            pred_norm = max(range(len(normed)), key=normed.__getitem__)
            results.append({"loglikelihoods": lls, "pred": pred, "pred_norm": pred_norm,
                            "correct": pred == answer, "correct_norm": pred_norm == answer})
    finally:
        model.train(was_training)
    return {"acc": accuracy([r["correct"] for r in results]),
            "acc_norm": accuracy([r["correct_norm"] for r in results]), "results": results}


# ----------------------------------------------------------------------------------------------------------------------
# generate, then check


def generate_and_check(model: GPT, tokenizer: Tokenizer, problems: list[dict], *, prompt_ids: Callable[[dict], list],
                       checker: Callable[[dict, str], bool], stop_ids, max_new_tokens: int = 64,
                       should_stop: Callable[[], bool] | None = None) -> dict:
    """Answer each problem greedily and check it.

    prompt_ids(problem) gives the prompt's token ids (e.g. the conversation rendered with add_generation_prompt);
    the answer is generated with temperature 0 (greedy, KV-cached) until a token of stop_ids or max_new_tokens, and
    checker(problem, answer text without the stop token) says whether it is right. Returns {"accuracy": accuracy(...),
    "ended": accuracy(...) of the answers that ended with a stop token, "results": [{"answer", "correct", "ended",
    "n_tokens"}]}. should_stop() is asked before each problem; True ends early with the problems done so far."""
    stop_ids = set(stop_ids)
    results = []
    for p in problems:
        if should_stop is not None and should_stop():
            break
        ids, ended = [], False
        for t in generate(model, prompt_ids(p), max_new_tokens=max_new_tokens, temperature=0.0, stop_ids=stop_ids,
                          n_alternatives=1):
            if t.stop:
                ended = True
                break
            ids.append(t.id)
        answer = tokenizer.decode(ids)
        results.append({"answer": answer, "correct": bool(checker(p, answer)), "ended": ended, "n_tokens": len(ids)})
    return {"accuracy": accuracy([r["correct"] for r in results]),
            "ended": accuracy([r["ended"] for r in results]), "results": results}
