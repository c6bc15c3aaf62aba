"""
One forward pass, looked at: everything the explorer draws, computed from GPT.forward_trace() and packed small.

    result = trace_forward(model, ids, token_bytes=tokenizer.token_bytes)
    blob = pack(result, meta={"model": "SmolLM2-135M"})   # a few MB at most, see SIZE below
    header, arrays = unpack(blob)                         # what the browser's trace.js reads, in Python

What a trace holds, for T tokens, n_layer = L layers of n_head = H heads, vocabulary V:
- the tokens: ids and display strings;
- every head's attention pattern (L, H, T, T), of which only the lower triangle is stored (the causal mask makes
  the rest zero), each weight p as round(255 * sqrt(p)) in one byte: the square root spends the 256 levels where
  attention lives (most weights are small) — 0.0004 is still 0.0004, 0.9 is within 0.007;
- per layer the L2 norm of the residual stream at every position (and what the attention and the MLP each wrote
  into it), the strongest MLP neurons of the layer with their activation at every token, and each token's most
  active neuron;
- the next-token distribution: the full last-position logits (so the page can apply any temperature exactly), and
  at every position the top 5 guesses and the probability the model gave the token that actually came next;
- per head four summary numbers to spot interesting heads (entropy, previous-token, first-token, self attention).

SIZE: attention dominates, L * H * T * (T + 1) / 2 bytes: SmolLM2-135M (30 x 9 heads) at 128 tokens is 2.2 MB, a
6-layer, 6-head GPT at 256 tokens 1.2 MB. The caller picks how many tokens to trace (apps.explorer.selectors.
token_limit keeps the file under a budget).

This module imports torch and numpy only (no Django): the Celery glue in workers/explorer.py calls it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .model import GPT

MAGIC = b"LLTR"
VERSION = 1
ATTN_ENCODING = "sqrt-uint8"  # p = (byte / 255) ** 2
TOP_NEXT = 5  # guesses kept per position
TOP_FINAL = 50  # last-position tokens whose strings ship with the trace (the order does not change with temperature)
TOP_NEURONS = 8  # MLP neurons kept per layer
HEAD_STATS = ("entropy", "previous", "first", "self")  # columns of head_stats


@dataclass
class TraceResult:
    """What one forward pass looked like. Arrays are numpy; attn is the exact float32 pattern before packing."""
    token_ids: list[int]
    tokens: list[str]  # display string of every token (bytes that are not UTF-8 shown as \\xNN)
    attn: np.ndarray  # (L, H, T, T) float32 softmax weights
    residual_norm: np.ndarray  # (L + 1, T): the embedding, then the stream after every block
    attn_write_norm: np.ndarray  # (L, T): norm of what each layer's attention added to the stream
    mlp_write_norm: np.ndarray  # (L, T): norm of what each layer's MLP added
    mlp_neurons: np.ndarray  # (L, K) int: the K neurons of each layer with the largest activation anywhere
    mlp_values: np.ndarray  # (L, K, T): their activation at every token
    mlp_token_neuron: np.ndarray  # (L, T) int: each token's most active neuron in each layer
    mlp_token_value: np.ndarray  # (L, T): its activation
    mlp_active_fraction: np.ndarray  # (L,): share of hidden units above zero (GELU) or with |h| > 0.1 (SwiGLU)
    logits: np.ndarray  # (V,) float32 logits at the last position
    next_ids: np.ndarray  # (T, TOP_NEXT) int: the top guesses after every position
    next_probs: np.ndarray  # (T, TOP_NEXT)
    target_prob: np.ndarray  # (T,): probability given to the token that came next (NaN at the last position)
    head_stats: np.ndarray  # (L, H, 4): see HEAD_STATS and head_statistics()
    vocab: dict[int, str] = field(default_factory=dict)  # display strings of every id the trace mentions
    embedding: dict = field(default_factory=dict)  # first dims of the last token's embedding, for the walk-through


def token_label(raw: bytes) -> str:
    """How a token looks on screen: its text, or \\xNN escapes for bytes that are part of a longer character."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="backslashreplace")


@torch.no_grad()
def trace_forward(model: GPT, ids: Sequence[int], *, token_bytes: Callable[[int], bytes], special: dict[int, str] | None = None,
                  top_neurons: int = TOP_NEURONS) -> TraceResult:
    """Run `ids` (at most block_size of them) through `model` once and collect what the explorer shows."""
    cfg = model.config
    T = len(ids)
    if T == 0:
        raise ValueError("nothing to trace: the text encodes to zero tokens")
    if T > cfg.block_size:
        raise ValueError(f"{T} tokens exceed the model's block_size ({cfg.block_size}): truncate the text first")
    special = special or {}
    was_training = model.training
    model.eval()
    # what each MLP writes into the stream, caught on its way out by a forward hook (recomputing it from the hidden
    # activations would cost another down-projection per layer); the attention wrote the rest of the block's update
    mlp_out = []
    hooks = [blk.mlp.register_forward_hook(lambda mod, args, out: mlp_out.append(out[0].float()))
             for blk in model.transformer.h]
    try:
        device = next(model.parameters()).device
        idx = torch.tensor([list(ids)], dtype=torch.long, device=device)  # (1, T)
        logits, tr = model.forward_trace(idx)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)

    attn = torch.stack([a[0] for a in tr.attn]).float()  # (L, H, T, T)
    stream = torch.stack([tr.embedding[0], *[r[0] for r in tr.residual]]).float()  # (L + 1, T, C)
    attn_out = (stream[1:] - stream[:-1]) - torch.stack(mlp_out)  # (L, T, C)
    mlp_write = torch.stack([m.norm(dim=-1) for m in mlp_out])  # (L, T)

    # the MLP, one layer at a time (the hidden activations are the largest thing a trace sees: never copy them all)
    K = min(top_neurons, cfg.intermediate_size)
    neurons, values, token_neuron, token_value, active = [], [], [], [], []
    for h in tr.mlp_hidden:
        h = h[0].float()  # (T, I)
        top_k = h.amax(dim=0).topk(K).indices  # (K,): the neurons with the strongest activation anywhere
        neurons.append(top_k)
        values.append(h[:, top_k].T)  # (K, T)
        v, n = h.max(dim=-1)  # (T,): each token's most active neuron
        token_value.append(v)
        token_neuron.append(n)
        active.append(((h > 0) if cfg.mlp == "gelu" else (h.abs() > 0.1)).float().mean())

    logits = logits[0].float()  # (T, V)
    probs = logits.softmax(-1)
    top = probs.topk(min(TOP_NEXT, probs.size(-1)), dim=-1)
    target = torch.full((T,), float("nan"))
    if T > 1:
        target[:-1] = probs[torch.arange(T - 1), idx[0, 1:]].cpu()
    last = logits[-1]
    final_top = last.topk(min(TOP_FINAL, last.numel())).indices

    def label(i: int) -> str:
        return special[i] if i in special else token_label(token_bytes(i))

    mentioned = set(ids) | set(top.indices.flatten().tolist()) | set(final_top.tolist())
    vocab = {i: label(i) for i in sorted(mentioned)}

    wte = model.transformer.wte.weight[ids[-1]].float()
    wpe = model.transformer.wpe.weight[T - 1].float() if cfg.pos == "learned" else None
    embedding = {
        "dims": 8,
        "token": wte[:8].tolist(),
        "position": wpe[:8].tolist() if wpe is not None else None,
        "sum": stream[0, -1, :8].tolist(),
        "norm": float(stream[0, -1].norm()),
    }

    attn_np = attn.cpu().numpy()
    return TraceResult(
        token_ids=list(ids),
        tokens=[vocab[i] for i in ids],
        attn=attn_np,
        residual_norm=stream.norm(dim=-1).cpu().numpy(),
        attn_write_norm=attn_out.norm(dim=-1).cpu().numpy(),
        mlp_write_norm=mlp_write.cpu().numpy(),
        mlp_neurons=torch.stack(neurons).cpu().numpy().astype(np.int32),
        mlp_values=torch.stack(values).cpu().numpy(),
        mlp_token_neuron=torch.stack(token_neuron).cpu().numpy().astype(np.int32),
        mlp_token_value=torch.stack(token_value).cpu().numpy(),
        mlp_active_fraction=torch.stack(active).cpu().numpy(),
        logits=last.cpu().numpy(),
        next_ids=top.indices.cpu().numpy().astype(np.int32),
        next_probs=top.values.cpu().numpy(),
        target_prob=target.numpy(),
        head_stats=head_statistics(attn_np),
        vocab=vocab,
        embedding=embedding,
    )


def head_statistics(attn: np.ndarray) -> np.ndarray:
    """(L, H, T, T) attention -> (L, H, 4): per head, averaged over query positions 1..T-1 (position 0 can only
    attend to itself): the entropy of its rows in nats, and the mean weight on the previous token, on the first
    token (an "attention sink") and on itself. With one token there is nothing to average: zeros."""
    L, H, T, _ = attn.shape
    out = np.zeros((L, H, len(HEAD_STATS)), dtype=np.float32)
    if T < 2:
        return out
    rows = attn[:, :, 1:, :].astype(np.float64)  # (L, H, T-1, T)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(rows > 0, rows * np.log(rows), 0.0).sum(-1)  # (L, H, T-1)
    i = np.arange(1, T)
    out[..., 0] = ent.mean(-1)
    out[..., 1] = attn[:, :, i, i - 1].mean(-1)
    out[..., 2] = attn[:, :, i, 0].mean(-1)
    out[..., 3] = attn[:, :, i, i].mean(-1)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The binary format. Little-endian throughout:
#   "LLTR" | uint32 version | uint32 n | n bytes of UTF-8 JSON header, space-padded so the data starts 8-aligned |
#   data: one array after another, each at an 8-aligned offset the header gives.
# header["arrays"][name] = {"dtype": "uint8" | "int32" | "float16" | "float32", "shape": [...], "offset": bytes
# from the start of the data}. The browser reads it with one DataView and typed-array views, no parsing library.

_DTYPES = {"uint8": np.uint8, "int32": np.int32, "float16": np.float16, "float32": np.float32}


def quantize_attention(attn: np.ndarray) -> np.ndarray:
    """(L, H, T, T) weights -> (L, H, T*(T+1)/2) bytes: the lower triangle row by row, sqrt-encoded."""
    T = attn.shape[-1]
    rows, cols = np.tril_indices(T)  # row-major: (0,0), (1,0), (1,1), (2,0), ...
    tri = np.clip(attn[..., rows, cols], 0.0, 1.0)
    return np.rint(np.sqrt(tri) * 255.0).astype(np.uint8)


def dequantize_attention(packed: np.ndarray, T: int) -> np.ndarray:
    """The inverse of quantize_attention, up to rounding: (L, H, T*(T+1)/2) bytes -> (L, H, T, T) float32."""
    out = np.zeros((*packed.shape[:-1], T, T), dtype=np.float32)
    rows, cols = np.tril_indices(T)
    out[..., rows, cols] = (packed.astype(np.float32) / 255.0) ** 2
    return out


def pack(result: TraceResult, meta: dict | None = None) -> bytes:
    """TraceResult (+ any JSON-able meta: model name, config, timing) -> one binary blob."""
    T = len(result.token_ids)
    L, H = result.attn.shape[:2]
    arrays = {
        "attn": quantize_attention(result.attn),
        "residual_norm": result.residual_norm.astype(np.float32),
        "attn_write_norm": result.attn_write_norm.astype(np.float32),
        "mlp_write_norm": result.mlp_write_norm.astype(np.float32),
        "mlp_neurons": result.mlp_neurons.astype(np.int32),
        "mlp_values": result.mlp_values.astype(np.float16),
        "mlp_token_neuron": result.mlp_token_neuron.astype(np.int32),
        "mlp_token_value": result.mlp_token_value.astype(np.float32),
        "mlp_active_fraction": result.mlp_active_fraction.astype(np.float32),
        "logits": result.logits.astype(np.float32),
        "next_ids": result.next_ids.astype(np.int32),
        "next_probs": result.next_probs.astype(np.float32),
        "target_prob": result.target_prob.astype(np.float32),
        "head_stats": result.head_stats.astype(np.float32),
    }
    index, chunks, offset = {}, [], 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)
        raw = arr.tobytes()
        index[name] = {"dtype": arr.dtype.name, "shape": list(arr.shape), "offset": offset}
        pad = (-len(raw)) % 8
        chunks.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    header = {
        **(meta or {}),
        "format": "llmlab-trace",
        "version": VERSION,
        "n_tokens": T,
        "n_layer": L,
        "n_head": H,
        "token_ids": result.token_ids,
        "tokens": result.tokens,
        "vocab": {str(k): v for k, v in result.vocab.items()},
        "embedding": result.embedding,
        "attn_encoding": ATTN_ENCODING,
        "head_stats_columns": list(HEAD_STATS),
        "arrays": index,
    }
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * ((-(12 + len(text))) % 8)
    return MAGIC + struct.pack("<II", VERSION, len(text)) + text + b"".join(chunks)


def unpack(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """One blob -> (header, arrays by name). Raises ValueError for anything that is not a version-1 trace."""
    if len(blob) < 12 or blob[:4] != MAGIC:
        raise ValueError("not an explorer trace (bad magic)")
    version, n = struct.unpack_from("<II", blob, 4)
    if version != VERSION:
        raise ValueError(f"trace version {version} is not {VERSION}: trace the text again")
    header = json.loads(blob[12:12 + n].decode("utf-8"))
    data = memoryview(blob)[12 + n:]
    arrays = {}
    for name, spec in header["arrays"].items():
        dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
        count = int(np.prod(spec["shape"])) if spec["shape"] else 1
        arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=spec["offset"]).reshape(spec["shape"])
    return header, arrays
