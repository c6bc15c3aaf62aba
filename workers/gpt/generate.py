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

from .model import GPT, KVCache, apply_rope, causal_mask


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
    tokens = checked_tokens(idx_list, temperature=temperature, repetition_penalty=repetition_penalty)
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


def checked_tokens(idx_list, *, temperature: float, repetition_penalty: float) -> list[int]:
    """idx_list as ints, once generate()'s arguments are known to make sense (batch_generate checks the same)."""
    tokens = [int(t) for t in idx_list]
    if not tokens:
        raise ValueError("idx_list is empty: pass at least one token id, e.g. the tokenizer's end-of-text id")
    if temperature < 0:
        raise ValueError(f"temperature ({temperature}) must be >= 0: 0 is greedy, 1 samples the model as it is")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty ({repetition_penalty}) must be > 0: 1.0 turns it off")
    return tokens


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


# -----------------------------------------------------------------------------
# batched sampling: many prompts at once, each row with its own length (for GRPO's G samples per prompt)
#
# Rows are left-padded to the longest prompt, so every row's next token sits in the same cache column and one
# forward pass decodes them all. Left padding alone would be wrong twice over: the pad keys would be attended to,
# and every row's positions would be shifted by its padding (GPT-2's learned positions are absolute). So
# forward_rows() takes per-row positions and a mask of which keys are real tokens, and runs the model's own
# modules (every weight, norm and projection of GPT, LoRA layers included) with that mask.


def base_gpt(model) -> GPT:
    """The GPT inside `model`: the model itself, or what a peft wrapper holds (its LoRA layers stay in place)."""
    seen = model
    while not isinstance(seen, GPT):
        if not hasattr(seen, "get_base_model"):
            raise TypeError(f"{type(model).__name__} is not a workers.gpt.model.GPT or a peft wrapper around one: "
                            f"load the model with workers.gpt (checkpoint or importers) first")
        seen = seen.get_base_model()
    return seen


def forward_rows(model, idx: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor,
                 kv_cache: KVCache | None = None, last: int | None = None) -> torch.Tensor:
    """Logits (B, T, vocab_size) of a padded batch, or of its last `last` columns only (TRL's logits_to_keep: the
    output head over SmolLM2's 49152 tokens is the largest tensor of a training forward).

    idx (B, T) token ids; positions (B, T) each token's position in its own row; key_valid (B, Tk) bool, True for
    real tokens, over all Tk = kv_cache.pos + T keys (just T without a cache). A query attends to the real keys at or
    before its column, and always to itself, so a pad row stays finite; what pads compute is never read."""
    gpt = base_gpt(model)
    cfg = gpt.config
    B, T = idx.size()
    start = kv_cache.pos if kv_cache is not None else 0
    Tk = start + T
    if int(positions.max()) >= cfg.block_size:
        raise ValueError(f"a row reaches position {int(positions.max())}, past the model's block_size "
                         f"({cfg.block_size}): crop the rows to {cfg.block_size} tokens")
    x = gpt.transformer.wte(idx)  # (B, T, C)
    rope = None
    if cfg.pos == "learned":
        x = x + gpt.transformer.wpe(positions)  # (B, T, C) + (B, T, C)
    else:
        # per-row tables, with a head axis to broadcast over: (B, 1, T, hs/2) each
        rope = (gpt.rope_cos[positions].unsqueeze(1), gpt.rope_sin[positions].unsqueeze(1))
    x = gpt.transformer.drop(x)
    self_key = torch.arange(Tk, device=idx.device)[None, :] == torch.arange(start, Tk, device=idx.device)[:, None]
    mask = (causal_mask(T, Tk, idx.device)[None] & key_valid[:, None, :]) | self_key[None]  # (B, T, Tk)
    mask = mask.unsqueeze(1)  # (B, 1, T, Tk): the same for every head
    for layer, block in enumerate(gpt.transformer.h):
        x = x + _masked_attention(block.attn, block.ln_1(x), rope, mask, kv_cache, layer)
        x = x + block.mlp(block.ln_2(x))
    if kv_cache is not None:
        kv_cache.pos += T
    if last is not None:
        x = x[:, -last:]  # (B, last, C)
    return gpt.lm_head(gpt.transformer.ln_f(x))  # (B, T or last, vocab_size)


def _masked_attention(attn, x, rope, mask, kv_cache, layer):
    """CausalSelfAttention.forward with an explicit (B, 1, T, Tk) mask and per-row rotary tables."""
    B, T, C = x.size()
    hs = attn.head_size
    q, k, v = attn.c_attn(x).split([attn.n_head * hs, attn.n_kv_head * hs, attn.n_kv_head * hs], dim=2)
    q = q.view(B, T, attn.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, attn.n_kv_head, hs).transpose(1, 2)  # (B, nkvh, T, hs)
    v = v.view(B, T, attn.n_kv_head, hs).transpose(1, 2)  # (B, nkvh, T, hs)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    if kv_cache is not None:
        k, v = kv_cache.update(layer, k, v)  # (B, nkvh, Tk, hs)
    if attn.n_kv_head != attn.n_head:
        k = k.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)  # (B, nh, Tk, hs)
        v = v.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)  # (B, nh, Tk, hs)
    dropout_p = attn.dropout if attn.training else 0.0
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, nh, T, hs)
    y = y.transpose(1, 2).contiguous().view(B, T, C)
    return attn.resid_dropout(attn.c_proj(y))


def left_pad(rows: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(idx, positions, valid), each (B, width): rows right-aligned, pads (id 0) on the left, each row's positions
    counting from 0 at its first real token."""
    width = max(len(r) for r in rows) if width is None else width
    idx = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, r in enumerate(rows):
        if r:
            idx[b, width - len(r):] = torch.tensor(r, dtype=torch.long)
        valid[b, width - len(r):] = True
    offset = (~valid).sum(dim=1, keepdim=True)  # (B, 1) pads in front of each row
    positions = (torch.arange(width)[None, :] - offset).clamp(min=0)  # (B, width)
    return idx, positions, valid


@torch.inference_mode()
def generate_batch(model, prompts_ids: list[list[int]], *, max_new_tokens: int, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None, stop_ids=(),
                   generator: torch.Generator | None = None) -> list[list[int]]:
    """Sample a continuation of every prompt at once, with one KV cache for the batch; return the new ids per row.

    A row ends after a token in stop_ids (kept in its list) or when prompt + continuation fill the model's
    block_size: unlike generate(), there is no sliding window, because an RL sample must be scored as the model saw
    it. temperature=0 is greedy; top_k and top_p filter as in generate(). `generator` is a CPU torch.Generator
    (sampling happens on the CPU, as in generate()); the same generator state gives the same samples.
    """
    if not prompts_ids:
        raise ValueError("prompts_ids is empty: pass at least one prompt")
    if temperature < 0:
        raise ValueError(f"temperature ({temperature}) must be >= 0: 0 is greedy, 1 samples the model as it is")
    gpt = base_gpt(model)
    block_size = gpt.config.block_size
    prompts = [[int(t) for t in p] for p in prompts_ids]
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty: pass at least one token id, e.g. the tokenizer's end-of-text id")
        if len(p) >= block_size:
            raise ValueError(f"prompt {i} has {len(p)} tokens and leaves no room in the model's block_size "
                             f"({block_size}): shorten it to at most {block_size - 1} tokens")
    stop_ids = set(int(s) for s in stop_ids)
    B, P = len(prompts), max(len(p) for p in prompts)
    device = gpt.lm_head.weight.device
    lengths = torch.tensor([len(p) for p in prompts])  # (B,)
    # no row can outgrow block_size, so no row needs more than block_size - len(prompt) new tokens
    max_new_tokens = min(max_new_tokens, block_size - int(lengths.min()))
    out: list[list[int]] = [[] for _ in range(B)]
    if max_new_tokens <= 0:
        return out
    was_training = model.training
    model.eval()
    try:
        w = gpt.transformer.wte.weight
        cfg = gpt.config
        # room for the padded prompts and every new token but the last, which is never fed back
        cache = KVCache(cfg.n_layer, B, cfg.n_kv_head, P + max_new_tokens - 1, cfg.head_size, w.device, w.dtype)
        idx, positions, valid = left_pad(prompts, P)
        valid = torch.cat([valid, torch.ones(B, max_new_tokens, dtype=torch.bool)], dim=1).to(device)  # (B, P+new)
        logits = forward_rows(gpt, idx.to(device), positions.to(device), valid[:, :P], cache)[:, -1]  # (B, V)
        done = [False] * B
        for t in range(max_new_tokens):
            logits = logits.float().cpu()  # (B, V)
            if temperature == 0:
                toks = torch.argmax(logits, dim=-1)  # (B,)
            else:
                probs = F.softmax(filter_logits(logits / temperature, top_k=top_k, top_p=top_p), dim=-1)
                toks = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)
            for b in range(B):
                if done[b]:
                    continue
                tok = int(toks[b])
                out[b].append(tok)
                # ends on a stop token, or when the row fills the context (cut there: scored as it stands)
                done[b] = tok in stop_ids or len(prompts[b]) + len(out[b]) >= block_size
            if all(done) or t == max_new_tokens - 1:
                break
            # finished rows keep decoding a harmless token at a clamped position; their outputs are dropped
            pos = (lengths + t).clamp(max=block_size - 1)[:, None].to(device)  # (B, 1)
            logits = forward_rows(gpt, toks[:, None].to(device), pos, valid[:, :P + t + 1], cache)[:, -1]
    finally:
        model.train(was_training)
    return out
