"""The merge explorer: a byte-level BPE's merges one by one, what the first n of them make of a sample text, and how
often each pair occurred when it was learned (trained BPEs keep the counts).

Pure functions over workers.gpt.tokenizers objects; views.py calls them.
"""

from __future__ import annotations

import functools
import math

from apps.tokenization.playground import hex_bytes, segments_window, show_bytes
from workers.gpt import tokenizers as toklib

MERGE_TEXT_MAX_CHARS = 5000  # the merge explorer runs BPE in Python: keep its sample short



@functools.lru_cache(maxsize=8)
def _merge_index(tok: toklib.Tokenizer) -> dict[int, int]:
    """rank (token id) -> merge number (1-based) for every merged token."""
    return {m.rank: k for k, m in enumerate(tok.merges(), 1)}


@functools.lru_cache(maxsize=8)
def merge_list(tok: toklib.Tokenizer) -> tuple:
    return tuple(tok.merges())


def merge_counts(tok: toklib.Tokenizer) -> list[int] | None:
    """How often each pair occurred in the training text when it was merged (trained BPEs only)."""
    return getattr(tok, "merge_counts", None)


def merge_info(tok: toklib.Tokenizer, k: int) -> dict:
    """Merge number k (1-based): which two tokens join into which bytes, and (trained) how often it occurred."""
    m = merge_list(tok)[k - 1]
    counts = merge_counts(tok)
    left, right = tok.token_bytes(m.left), tok.token_bytes(m.right)
    return {"n": k, "rank": m.rank, "left": m.left, "right": m.right,
            "left_text": show_bytes(left), "right_text": show_bytes(right), "merged_text": show_bytes(m.merged),
            "merged_hex": hex_bytes(m.merged), "count": counts[k - 1] if counts else None}



def merge_step(tok: toklib.Tokenizer, text: str, n: int) -> dict:
    """The sample text with only the first n merges applied, and what merge n did to it."""
    ids = tok.encode_with_merge_limit(text, n)
    index = _merge_index(tok)
    window = segments_window(tok, ids, 0, 0, 100_000, show_ws=True)["segments"]
    made_now = merge_list(tok)[n - 1].rank if n > 0 else None
    for seg in window:
        merge_numbers = [index.get(i) for i in seg["ids"]]
        seg["merge"] = max((k for k in merge_numbers if k), default=0)
        seg["fresh"] = made_now is not None and made_now in seg["ids"]
    n_bytes = len(text.encode("utf-8"))
    return {"n": n, "segments": window, "tokens": len(ids), "bytes": n_bytes,
            "bytes_per_token": n_bytes / len(ids) if ids else None,
            "fused": sum(1 for s in window if s["fresh"]),
            "merge": merge_info(tok, n) if n > 0 else None}


def merge_table(tok: toklib.Tokenizer, around: int, radius: int = 6, *, mark: bool = True) -> list[dict]:
    """Merges around number `around` (marked as the current one when `mark`)."""
    total = tok.n_merges
    lo, hi = max(1, around - radius), min(total, around + radius)
    return [merge_info(tok, k) | {"current": mark and k == around} for k in range(lo, hi + 1)]


def merge_count_curve(tok: toklib.Tokenizer, *, width: int = 600, height: int = 120, points: int = 300,
                      marker_n: int | None = None) -> dict | None:
    """A polyline (SVG coordinates) of merge counts on a log scale, for trained BPEs."""
    counts = merge_counts(tok)
    if not counts:
        return None
    n = len(counts)
    step = max(1, n // points)
    sample = [(k, counts[k]) for k in range(0, n, step)] + [(n - 1, counts[-1])]
    top = math.log10(max(counts) + 1)
    coords = " ".join(f"{(k / max(1, n - 1)) * width:.1f},{height - (math.log10(c + 1) / top) * height:.1f}"
                      for k, c in sample)
    marker = None if not marker_n else round((marker_n - 1) / max(1, n - 1) * width, 1)
    return {"points": coords, "width": width, "height": height, "max": max(counts), "min": min(counts), "n": n,
            "marker": marker}
