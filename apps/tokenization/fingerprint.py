"""A tokenizer's fingerprint: what decides the ids it produces, so shards encoded with it can be found again
(shard cache keys) and a retrained tokenizer that happens to share a name is told apart."""

from __future__ import annotations

import functools
import hashlib
import json

from workers.gpt import tokenizers as toklib


@functools.lru_cache(maxsize=32)
def fingerprint(tok: toklib.Tokenizer) -> str:
    """sha256 of the ranks and pattern (byte-level BPE) or the characters (character-level), plus special tokens."""
    h = hashlib.sha256()
    if isinstance(tok, toklib.TiktokenTokenizer):
        h.update(tok.kind.encode() + b"\0" + tok.pat_str.encode() + b"\0")
        h.update(toklib.dump_ranks(tok.mergeable_ranks))
    elif isinstance(tok, toklib.CharTokenizer):
        h.update(b"char\0" + "".join(tok.chars).encode("utf-8"))
    else:  # pragma: no cover - every kind is one of the above
        raise TypeError(f"no fingerprint for {type(tok).__name__}")
    h.update(json.dumps(sorted(tok.special_tokens.items())).encode())
    return h.hexdigest()

