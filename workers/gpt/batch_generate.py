"""
Sampling from a GPT for many requests at once: continuous batching (after vLLM and llama.cpp's server).

A Batch holds rows, one per request, each with its own KVCache, sampling settings, torch.Generator and stop ids.
Rows join with add() and leave with remove() (or by themselves after their last token) between steps; step() runs
ONE forward over every row and yields each row's next token, as generate() would have yielded it:

    batch = Batch(model)
    a = batch.add(prompt_ids, max_new_tokens=16, temperature=0)
    for row, token in batch.step(): ...        # a's first token
    b = batch.add(other_ids, max_new_tokens=8, temperature=0.8, seed=7)
    for row, token in batch.step(): ...        # a's second token and b's first, from one forward

How one forward serves rows at different positions: the new tokens of all rows (a whole prompt chunk for a row
that just joined, one token for a row that is decoding) are packed side by side into one (1, N, C) sequence. Every
per-token operation (embeddings, norms, the q/k/v, output and MLP matmuls, lm_head) runs on the packed sequence;
attention alone is done per row, against that row's own KVCache, with exactly the shapes generate() uses. So rows
never see each other, and nothing is padded inside attention.

Why a request gets the same tokens batched as alone (float32 on CPU): a row's result must not depend on which
other rows share its matmuls. Element-wise ops and per-row norms are independent of the batch. A matmul row is too,
but only once the batch is large enough: measured on torch 2.13 CPU, (M, K) @ (K, N) gives each row of M >= 4 (one
thread) or M >= 12 (two threads) the same bits as in any larger M, while M = 1..3 takes another kernel (a
matrix-vector one) that rounds differently in the last bit. So:
- a step over two or more rows pads the packed sequence with zero rows up to MIN_ROWS: a row's bits are then the
  same in a batch of two as in a batch of twenty, whoever the others are;
- a step over one row alone is exactly generate()'s forward (model(idx, kv_cache=cache)): a request alone gets
  generate()'s tokens and probabilities bit for bit, and is as fast (padding it would have taken the matrix-matrix
  kernel and doubled a lone stream's time per token).
Between the two kernels probabilities can differ by ~1e-7, so a greedy token could only differ where the two best
logits tie to that precision; tests/gpt/test_batch_generate.py checks tokens batched against alone, token for token,
on GPT-2-style, Llama-style and SmolLM2 models, and bits across batch compositions.

Long prompts are prefilled in chunks of PREFILL_CHUNK tokens, cut at fixed offsets of the prompt (never by what
else is in the batch, which would change the chunk shapes and so the bits), at most PREFILL_BUDGET prompt tokens
per step: a 4,000-token prompt joining does not freeze the other rows' streams for its whole prefill.

Sampling is generate()'s, row by row: repetition penalty, temperature, top_k, top_p, min_p, greedy at
temperature 0, each row drawing from its own seeded generator. When a row's context outgrows block_size it slides
as in generate(): its cache is refilled with the last block_size tokens.
"""

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from .generate import GeneratedToken, _top, apply_repetition_penalty, checked_tokens, filter_logits
from .model import GPT, KVCache, apply_rope, causal_mask

MIN_ROWS = 16  # a step over several rows pads its packed sequence to this many tokens (module docstring)
PREFILL_CHUNK = 512  # a prompt is prefilled in pieces of this many tokens, cut at fixed offsets
PREFILL_BUDGET = 512  # prompt tokens per step, beyond the first chunk (a step always makes progress)


@dataclass(eq=False)
class Row:
    """One request in the batch. Read-only for callers, except `tag` (anything: the caller's handle)."""
    tokens: list[int]  # the whole context: prompt, then every token generated so far
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    min_p: float | None
    repetition_penalty: float
    stop_ids: frozenset
    n_alternatives: int
    rng: torch.Generator | None
    cache: KVCache
    tag: object = None
    pending: list[int] = field(default_factory=list)  # tokens to feed before the next sample (prefill)
    generated: int = 0
    cropped: bool = False
    done: bool = False


class Batch:
    """The rows being generated for one model, and the step that advances them all."""

    def __init__(self, model: GPT):
        self.model = model.eval()
        self.rows: list[Row] = []
        self.device = model.lm_head.weight.device

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, idx_list, *, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
            top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0,
            seed: int | None = None, stop_ids=(), n_alternatives: int = 5, tag=None) -> Row:
        """A new row continuing idx_list; its first token comes from the next step(). The arguments are
        generate()'s, with the same meaning and the same checks."""
        tokens = checked_tokens(idx_list, temperature=temperature, repetition_penalty=repetition_penalty)
        block_size = self.model.config.block_size
        cache = KVCache.for_model(self.model, batch_size=1,
                                  max_seq_len=min(len(tokens), block_size) + max_new_tokens)
        row = Row(tokens=tokens, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                  min_p=min_p, repetition_penalty=repetition_penalty, stop_ids=frozenset(stop_ids),
                  n_alternatives=n_alternatives, rng=torch.Generator().manual_seed(seed) if seed is not None else None,
                  cache=cache, tag=tag, pending=tokens[-block_size:], cropped=len(tokens) > block_size)
        if max_new_tokens <= 0:
            row.done = True  # nothing to generate: it never takes a place in a step
        else:
            self.rows.append(row)
        return row

    def remove(self, row: Row) -> None:
        """Take a row out (its request was cancelled); its KV cache goes with it."""
        row.done = True
        if row in self.rows:
            self.rows.remove(row)

    @torch.inference_mode()
    def step(self) -> list[tuple[Row, GeneratedToken]]:
        """One forward over the rows; returns (row, token) for every row whose prompt is now fully read (a row in
        the middle of a long prompt yields nothing this step). Rows that have finished leave the batch."""
        if not self.rows:
            return []
        feeds, budget, prefilling = [], PREFILL_BUDGET, False
        for row in self.rows:
            if len(row.pending) == 1:
                feeds.append((row, row.pending))
                continue
            # the chunk boundaries are fixed offsets into what this row prefills, whatever else is in the batch
            n = min(len(row.pending), PREFILL_CHUNK - row.cache.pos % PREFILL_CHUNK)
            if prefilling and n > budget:
                continue  # this step's prompt work is used up: the row reads its prompt next step
            prefilling, budget = True, budget - n
            feeds.append((row, row.pending[:n]))
        logits = forward_packed(self.model, [(row.cache, chunk) for row, chunk in feeds])  # (len(feeds), V)
        out = []
        for (row, chunk), row_logits in zip(feeds, logits):
            row.pending = row.pending[len(chunk):]
            if row.pending:
                continue  # more of the prompt to read first
            token = self._sample(row, row_logits)
            out.append((row, token))
            if token.stop or row.generated == row.max_new_tokens:
                self.remove(row)
            elif row.cache.pos < row.cache.max_seq_len:
                row.pending = [token.id]
            else:
                # the window is full: positions would shift, so refill the cache with the last block_size tokens
                row.cropped = True
                row.cache.reset()
                row.pending = row.tokens[-self.model.config.block_size:]
        return out

    def _sample(self, row: Row, logits: torch.Tensor) -> GeneratedToken:
        """generate()'s sampling, for one row."""
        logits = logits.float().cpu()  # (V,)
        raw = F.softmax(logits, dim=-1)
        logits = apply_repetition_penalty(logits, row.tokens, row.repetition_penalty)
        if row.temperature > 0:
            logits = logits / row.temperature
        logits = filter_logits(logits, top_k=row.top_k, top_p=row.top_p, min_p=row.min_p)
        probs = F.softmax(logits, dim=-1)
        if row.temperature == 0:
            tok = int(torch.argmax(probs))
        else:
            tok = int(torch.multinomial(probs, 1, generator=row.rng))
        row.tokens.append(tok)
        index, row.generated = row.generated, row.generated + 1
        return GeneratedToken(
            id=tok, prob=probs[tok].item(), alternatives=_top(probs, row.n_alternatives),
            raw_prob=raw[tok].item(), raw_alternatives=_top(raw, row.n_alternatives),
            index=index, cropped=row.cropped, stop=tok in row.stop_ids,
        )


def forward_packed(model: GPT, feeds: list[tuple[KVCache, list[int]]]) -> torch.Tensor:
    """Feed each (cache, new token ids) pair its tokens, at that cache's position, in one pass through the model;
    return the logits after each pair's last token, (len(feeds), vocab_size). Each cache advances by its tokens.

    The same computation as model(idx, kv_cache=cache) per pair (and that very call for a single pair), with the
    per-token work packed into one sequence (padded to MIN_ROWS) and attention done per pair."""
    cfg = model.config
    device = model.lm_head.weight.device
    if len(feeds) == 1:  # alone: exactly generate()'s forward (and its matmul kernels), as fast as it
        cache, ids = feeds[0]
        return model(torch.tensor([ids], dtype=torch.long, device=device), kv_cache=cache)[0][:, -1]  # (1, V)
    sizes = [len(ids) for _, ids in feeds]
    starts = [cache.pos for cache, _ in feeds]
    for (cache, ids), start in zip(feeds, starts):
        if start + len(ids) > min(cache.max_seq_len, cfg.block_size):
            raise ValueError(f"cannot feed {len(ids)} tokens at position {start}: the cache holds "
                             f"{cache.max_seq_len} and the model's block_size is {cfg.block_size}")
    N = sum(sizes)
    P = max(N, MIN_ROWS)
    idx = torch.zeros(P, dtype=torch.long, device=device)
    idx[:N] = torch.tensor([t for _, ids in feeds for t in ids], dtype=torch.long, device=device)
    pos = torch.zeros(P, dtype=torch.long, device=device)
    pos[:N] = torch.cat([torch.arange(s, s + n) for s, n in zip(starts, sizes)]).to(device)  # each token's position
    x = model.transformer.wte(idx)[None]  # (1, P, C)
    rope = None
    if cfg.pos == "learned":
        x = x + model.transformer.wpe(pos)  # (1, P, C) + (P, C)
    else:
        rope = (model.rope_cos[pos], model.rope_sin[pos])  # (P, hs/2) each: every token at its own position
    # each feed's attention mask, the same in every layer: none for one new token (it sees every key) or a
    # prompt's first chunk (plain causal), else the bottom-right causal block of (T, Tk) -- as the model's forward
    masks = [None if n == 1 or start == 0 else causal_mask(n, start + n, device) for n, start in zip(sizes, starts)]
    for layer, block in enumerate(model.transformer.h):
        x = x + _attention(block.attn, block.ln_1(x), rope, feeds, sizes, masks, layer)
        x = x + block.mlp(block.ln_2(x))
    for cache, n in zip((c for c, _ in feeds), sizes):
        cache.pos += n
    last = torch.tensor([sum(sizes[:i + 1]) - 1 for i in range(len(sizes))], device=device)  # each feed's last token
    h = torch.zeros(max(len(feeds), MIN_ROWS), cfg.n_embd, dtype=x.dtype, device=device)
    h[:len(feeds)] = x[0, last]
    return model.lm_head(model.transformer.ln_f(h[None]))[0, :len(feeds)]  # (len(feeds), V)


def _attention(attn, x, rope, feeds, sizes, masks, layer) -> torch.Tensor:
    """CausalSelfAttention.forward for a packed sequence x (1, P, C): q, k, v and the output projection over all
    tokens at once, the attention itself per feed against its own cache."""
    _, P, C = x.size()
    hs, nh, nkvh = attn.head_size, attn.n_head, attn.n_kv_head
    q, k, v = attn.c_attn(x).split([nh * hs, nkvh * hs, nkvh * hs], dim=2)
    q = q.view(1, P, nh, hs).transpose(1, 2)  # (1, nh, P, hs)
    k = k.view(1, P, nkvh, hs).transpose(1, 2)  # (1, nkvh, P, hs)
    v = v.view(1, P, nkvh, hs).transpose(1, 2)  # (1, nkvh, P, hs)
    if rope is not None:
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    ys, at = [], 0
    for (cache, _), T, mask in zip(feeds, sizes, masks):
        qi = q[:, :, at:at + T]  # (1, nh, T, hs)
        ki, vi = cache.update(layer, k[:, :, at:at + T], v[:, :, at:at + T])  # (1, nkvh, Tk, hs)
        at += T
        if nkvh != nh:
            ki = ki.repeat_interleave(nh // nkvh, dim=1)  # (1, nh, Tk, hs)
            vi = vi.repeat_interleave(nh // nkvh, dim=1)  # (1, nh, Tk, hs)
        if T == ki.size(2):
            y = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True)  # (1, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask)  # mask None for T == 1
        ys.append(y.transpose(1, 2).reshape(T, C))  # (T, C)
    y = torch.zeros(P, C, dtype=x.dtype, device=x.device)
    y[:at] = torch.cat(ys)
    return attn.c_proj(y[None])  # (1, P, C)
