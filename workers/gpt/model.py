"""
One GPT language model, in one file, after karpathy/nanoGPT's model.py.

The default configuration is GPT-2: learned position embeddings, LayerNorm, a GELU MLP. The block-style fields of
GPTConfig switch the same code to a Llama-style model: RoPE, RMSNorm, a SwiGLU MLP and grouped-query attention
(fewer key/value heads than query heads). References:
1) GPT-2 by OpenAI: https://github.com/openai/gpt-2/blob/master/src/model.py
2) RoPE: Su et al. 2021, https://arxiv.org/abs/2104.09864; SwiGLU: Shazeer 2020, https://arxiv.org/abs/2002.05202
3) grouped-query attention: Ainslie et al. 2023, https://arxiv.org/abs/2305.13245

Two forward paths share every weight and every line but one: forward() uses F.scaled_dot_product_attention (fused,
fast); forward_trace() computes the attention matrix explicitly and returns it together with per-layer activations,
for the explorer. Tests check the two agree.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F

from .config import GPTConfig


class KVCache:
    """Keys and values of the tokens seen so far, per layer, for incremental decoding (after nanochat's engine.py).

    Holds n_kv_head heads, not n_head: with grouped-query attention that is what makes the cache smaller.
    `pos` is the number of positions filled; the model advances it after the last layer has written.
    """

    def __init__(self, n_layer, batch_size, n_kv_head, max_seq_len, head_size, device=None, dtype=torch.float32):
        shape = (n_layer, batch_size, n_kv_head, max_seq_len, head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    @classmethod
    def for_model(cls, model: "GPT", batch_size: int = 1, max_seq_len: int | None = None) -> "KVCache":
        """A cache for `model` holding max_seq_len positions (default and at most its block_size): a generation
        that will never fill the context needs no more, and SmolLM2's 8192 positions would be 377 MB."""
        cfg = model.config
        weight = model.transformer.wte.weight
        size = cfg.block_size if max_seq_len is None else min(max_seq_len, cfg.block_size)
        return cls(cfg.n_layer, batch_size, cfg.n_kv_head, size, cfg.head_size, weight.device, weight.dtype)

    @property
    def max_seq_len(self) -> int:
        return self.k.size(3)

    def reset(self):
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, n_kv_head, T, hs) at positions pos..pos+T-1 of `layer`; return all keys and values so far."""
        T = k.size(2)
        end = self.pos + T
        if end > self.max_seq_len:
            raise ValueError(f"KVCache holds {self.max_seq_len} positions, cannot add {T} at position {self.pos}: "
                             f"crop the context to the model's block_size or reset() the cache")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, n_kv_head, end, hs)


@dataclass
class Trace:
    """What forward_trace() saw, one list entry per layer."""
    attn: list[torch.Tensor] = field(default_factory=list)  # softmax attention weights (B, nh, T, T)
    residual: list[torch.Tensor] = field(default_factory=list)  # residual stream after each block (B, T, C)
    mlp_hidden: list[torch.Tensor] = field(default_factory=list)  # MLP hidden activations (B, T, intermediate_size)
    embedding: torch.Tensor | None = None  # residual stream entering the first block (B, T, C)


def rope_cache(cfg: GPTConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for rotary embeddings, each (block_size, head_size // 2)."""
    hs = cfg.head_size
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hs, 2, dtype=torch.float32, device=device) / hs))  # (hs/2,)
    t = torch.arange(cfg.block_size, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (T, hs/2)
    return freqs.cos(), freqs.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[i], x[i + hs/2]) of x (B, nh, T, hs) by position-dependent angles; cos, sin are (T, hs/2).
    This is the "rotate half" layout of GPT-NeoX and Hugging Face Llama."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d].float(), x[..., d:].float()  # (B, nh, T, hs/2) each; rotate in float32 for accuracy
    y1 = x1 * cos - x2 * sin
    y2 = x1 * sin + x2 * cos
    return torch.cat((y1, y2), dim=-1).type_as(x)  # (B, nh, T, hs)


def make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


class CausalSelfAttention(nn.Module):

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = cfg.n_head, cfg.n_kv_head, cfg.head_size
        # query, key, value projections for all heads in one matmul; k and v have n_kv_head heads each
        self.c_attn = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_size, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, rope=None, kv_cache=None, layer=0, start_pos=0, trace=None):
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)
        hs = self.head_size
        q, k, v = self.c_attn(x).split([self.n_head * hs, self.n_kv_head * hs, self.n_kv_head * hs], dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkvh, T, hs)
        v = v.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkvh, T, hs)
        if rope is not None:
            cos, sin = rope
            cos, sin = cos[start_pos:start_pos + T], sin[start_pos:start_pos + T]  # (T, hs/2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nkvh, Tk, hs) with Tk = start_pos + T
        Tk = k.size(2)
        if self.n_kv_head != self.n_head:
            # grouped-query attention: each k/v head serves n_head // n_kv_head consecutive query heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # (B, nh, Tk, hs)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # (B, nh, Tk, hs)

        # query i sits at absolute position start_pos + i and may attend to keys 0..start_pos + i
        if trace is not None:
            # the explicit path: materialize the (T, Tk) attention matrix so it can be looked at
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, Tk)
            att = att.masked_fill(~causal_mask(T, Tk, x.device), float("-inf"))
            att = F.softmax(att.float(), dim=-1).type_as(q)
            trace.attn.append(att)
            y = att @ v  # (B, nh, T, Tk) x (B, nh, Tk, hs) -> (B, nh, T, hs)
        else:
            dropout_p = self.dropout if self.training else 0.0
            if T == Tk:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)  # (B, nh, T, hs)
            elif T == 1:
                # one new token sees every key: no mask to build (and to turn into an additive one) per layer
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, nh, 1, hs)
            else:
                # decoding with a cache: is_causal would align the mask to the top-left corner, we need bottom-right
                mask = causal_mask(T, Tk, x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


def causal_mask(T: int, Tk: int, device=None) -> torch.Tensor:
    """(T, Tk) bool, True where query i (the last T of Tk positions) may attend to key j."""
    return torch.ones(T, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - T)


class MLP(nn.Module):

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.c_fc = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.bias)
        if self.swiglu:
            self.c_gate = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, trace=None):
        if self.swiglu:
            h = F.silu(self.c_gate(x)) * self.c_fc(x)  # (B, T, I)
        else:
            h = F.gelu(self.c_fc(x))  # (B, T, I)
        if trace is not None:
            trace.mlp_hidden.append(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, kv_cache=None, layer=0, start_pos=0, trace=None):
        x = x + self.attn(self.ln_1(x), rope, kv_cache, layer, start_pos, trace)
        x = x + self.mlp(self.ln_2(x), trace)
        return x


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.pos == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # weight tying (https://paperswithcode.com/method/weight-tying): the output head reuses the embedding
            self.lm_head.weight = self.transformer.wte.weight
        if config.pos == "rope":
            # buffers, not parameters, and not saved: they are a function of the config
            cos, sin = rope_cache(config)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

        self.apply(self._init_weights)
        # GPT-2 scales the init of the projections into the residual stream by 1/sqrt(2 * n_layer): each block adds
        # two of them, and their sum should not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = False) -> int:
        """Parameters, counting tied weights once; non_embedding leaves out the position embeddings (nanoGPT)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.config.pos == "learned":
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, kv_cache=None, start_pos=None):
        """idx (B, T) token ids -> (logits (B, T, vocab_size), loss or None).

        With a kv_cache, idx holds only the new tokens and start_pos defaults to kv_cache.pos; without one, the
        positions start at start_pos (default 0). targets (B, T) give the mean cross-entropy; -1 is ignored.
        """
        logits, _ = self._run(idx, kv_cache, start_pos, trace=None)
        loss = None
        if targets is not None:
            # (B*T, vocab_size) against (B*T,); in float32 even under autocast, for an accurate log-softmax
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1)
        return logits, loss

    def forward_trace(self, idx) -> tuple[torch.Tensor, Trace]:
        """Like forward(idx), but also return a Trace: per-layer attention weights computed explicitly, the residual
        stream after each block, and the MLP hidden activations. Slower and memory-hungry: for inspection only, and
        best under torch.no_grad() (and model.eval(): the explicit path applies no attention dropout)."""
        return self._run(idx, None, None, trace=Trace())

    def _run(self, idx, kv_cache, start_pos, trace):
        B, T = idx.size()
        if start_pos is None:
            start_pos = kv_cache.pos if kv_cache is not None else 0
        elif kv_cache is not None and start_pos != kv_cache.pos:
            raise ValueError(f"start_pos ({start_pos}) disagrees with kv_cache.pos ({kv_cache.pos}): omit start_pos")
        if start_pos + T > self.config.block_size:
            raise ValueError(f"cannot forward {T} tokens at position {start_pos}: the model's block_size is "
                             f"{self.config.block_size}; crop the context to the last {self.config.block_size} tokens")
        x = self.transformer.wte(idx)  # token embeddings (B, T, C)
        rope = None
        if self.config.pos == "learned":
            pos = torch.arange(start_pos, start_pos + T, dtype=torch.long, device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # (B, T, C) + (T, C)
        else:
            rope = (self.rope_cos, self.rope_sin)
        x = self.transformer.drop(x)
        if trace is not None:
            trace.embedding = x
        for layer, block in enumerate(self.transformer.h):
            x = block(x, rope, kv_cache, layer, start_pos, trace)
            if trace is not None:
                trace.residual.append(x)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        return logits, trace

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on matrices (Linear weights, embeddings) only; biases and norm gains, which are
        1-D, are not decayed. The fused CUDA kernel is used when available."""
        params = [p for p in self.parameters() if p.requires_grad]  # parameters() yields a tied weight once
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        extra = {"fused": True} if device_type == "cuda" else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)
