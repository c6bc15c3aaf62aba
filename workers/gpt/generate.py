"""
Sampling from a GPT, one token at a time, as a Python generator (after karpathy/nanochat's engine.py).

generate() yields a GeneratedToken per new token and knows nothing about where tokens go: the caller prints them,
publishes them on a socket, or collects them. It runs the prompt once through the model, then feeds one token at a
time against a KVCache. When the context outgrows block_size it slides: the cache is refilled with the last
block_size tokens, which gives exactly what recomputing the cropped context from scratch would.

The sampling distribution is built in the usual order: repetition penalty, temperature, then top_k, top_p and
min_p filters. temperature=0 is greedy decoding.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .model import GPT, KVCache


@dataclass(frozen=True)
class GeneratedToken:
    id: int
    prob: float  # probability of this token in the distribution it was drawn from (after penalty and filters)
    alternatives: list[tuple[int, float]]  # most likely tokens of that distribution, (id, prob), best first
    raw_prob: float  # probability of this token in the model's plain softmax (temperature 1, no filters)
    raw_alternatives: list[tuple[int, float]]  # most likely tokens of the plain softmax
    index: int  # 0 for the first generated token
    cropped: bool = False  # the context was longer than block_size and only its last block_size tokens were used
    stop: bool = False  # this is one of stop_ids; generation ends after it


@torch.inference_mode()
def generate(model: GPT, idx_list, *, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0,
             seed: int | None = None, stop_ids=(), n_alternatives: int = 5):
    """Yield up to max_new_tokens GeneratedTokens continuing the token ids idx_list.

    top_k keeps the k most likely tokens; top_p the smallest set whose probability reaches p; min_p drops tokens
    less likely than min_p times the most likely one. repetition_penalty > 1 makes tokens already in the context
    less likely (CTRL, Keskar et al. 2019). The same seed gives the same tokens. Generation stops after a token in
    stop_ids (which is yielded, with stop=True).
    """
    tokens = [int(t) for t in idx_list]
    if not tokens:
        raise ValueError("idx_list is empty: pass at least one token id, e.g. the tokenizer's end-of-text id")
    if temperature < 0:
        raise ValueError(f"temperature ({temperature}) must be >= 0: 0 is greedy, 1 samples the model as it is")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty ({repetition_penalty}) must be > 0: 1.0 turns it off")
    stop_ids = set(stop_ids)
    block_size = model.config.block_size
    device = model.lm_head.weight.device
    rng = torch.Generator().manual_seed(seed) if seed is not None else None  # sampling happens on the CPU
    was_training = model.training
    model.eval()
    try:
        # room for the (cropped) prompt and every new token but the last, which is never fed back
        cache = KVCache.for_model(model, batch_size=1, max_seq_len=min(len(tokens), block_size) + max_new_tokens)
        cropped = len(tokens) > block_size
        logits = _prefill(model, cache, tokens[-block_size:], device)
        for i in range(max_new_tokens):
            logits = logits.float().cpu()  # (V,)
            raw = F.softmax(logits, dim=-1)
            logits = apply_repetition_penalty(logits, tokens, repetition_penalty)
            if temperature > 0:
                logits = logits / temperature
            logits = filter_logits(logits, top_k=top_k, top_p=top_p, min_p=min_p)
            probs = F.softmax(logits, dim=-1)
            if temperature == 0:
                tok = int(torch.argmax(probs))
            else:
                tok = int(torch.multinomial(probs, 1, generator=rng))
            tokens.append(tok)
            stop = tok in stop_ids
            yield GeneratedToken(
                id=tok, prob=probs[tok].item(), alternatives=_top(probs, n_alternatives),
                raw_prob=raw[tok].item(), raw_alternatives=_top(raw, n_alternatives),
                index=i, cropped=cropped, stop=stop,
            )
            if stop or i == max_new_tokens - 1:
                return
            if cache.pos < cache.max_seq_len:
                logits = model(torch.tensor([[tok]], device=device), kv_cache=cache)[0][0, -1]
            else:
                # the window is full: positions would shift, so refill the cache with the last block_size tokens
                cropped = True
                cache.reset()
                logits = _prefill(model, cache, tokens[-block_size:], device)
    finally:
        model.train(was_training)


def _prefill(model, cache, tokens, device) -> torch.Tensor:
    idx = torch.tensor([tokens], dtype=torch.long, device=device)  # (1, T)
    logits, _ = model(idx, kv_cache=cache)
    return logits[0, -1]  # (V,)


def apply_repetition_penalty(logits: torch.Tensor, context, penalty: float) -> torch.Tensor:
    """Divide positive logits (multiply negative ones) of tokens that occur in context by penalty."""
    if penalty == 1.0 or not context:
        return logits
    ids = torch.tensor(sorted(set(context)), dtype=torch.long)
    logits = logits.clone()
    picked = logits[..., ids]
    logits[..., ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def filter_logits(logits: torch.Tensor, *, top_k: int | None = None, top_p: float | None = None,
                  min_p: float | None = None) -> torch.Tensor:
    """Set the logits of tokens that top_k, top_p or min_p rule out to -inf (over the last dimension).
    The most likely token always survives."""
    logits = logits.clone()
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits[logits < kth] = float("-inf")
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the strictly more likely tokens
        remove = before >= top_p  # the set already reached top_p without this token
        remove[..., 0] = False
        logits[remove.scatter(-1, order, remove)] = float("-inf")
    if min_p is not None and min_p > 0.0:
        probs = F.softmax(logits, dim=-1)
        logits[probs < min_p * probs.max(dim=-1, keepdim=True).values] = float("-inf")
    return logits


def _top(probs: torch.Tensor, n: int) -> list[tuple[int, float]]:
    values, ids = torch.topk(probs, min(n, probs.size(-1)))
    return [(int(i), float(p)) for i, p in zip(ids, values) if p > 0]
