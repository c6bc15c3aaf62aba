"""The vocabulary browser: every token of a tokenizer, searchable by text, id or bytes, with the two tokens each BPE
token was merged from.

Pure functions over workers.gpt.tokenizers objects; views.py calls them.
"""

from __future__ import annotations

import functools
import re

from apps.system.templatetags.labtext import visible_whitespace
from apps.tokenization.merges import merge_list
from apps.tokenization.playground import hex_bytes, is_utf8, show_bytes
from workers.gpt import tokenizers as toklib


@functools.lru_cache(maxsize=8)
def _vocab(tok: toklib.Tokenizer) -> tuple[list[int], list[bytes], list[str]]:
    if isinstance(tok, toklib.TiktokenTokenizer):
        pairs = sorted((rank, token) for token, rank in tok.mergeable_ranks.items())
        pairs += sorted((i, s.encode("utf-8")) for s, i in tok.special_tokens.items())
    else:
        pairs = [(i, tok.token_bytes(i)) for i in range(tok.n_vocab)]
    ids = [i for i, _ in pairs]
    data = [b for _, b in pairs]
    texts = [b.decode("utf-8", "replace") for b in data]
    return ids, data, texts


def vocab_search(tok: toklib.Tokenizer, q: str, *, page: int = 1, per_page: int = 100,
                 partial_only: bool = False) -> dict:
    """Tokens whose text contains q (case-sensitive), or the token with id q ('#123' or '123'), or whose bytes
    contain a hex string ('0xe4bd'); 100 a page."""
    ids, data, texts = _vocab(tok)
    q = q.strip()
    specials = set(tok.special_tokens.values())
    id_hit = None
    if re.fullmatch(r"#?\d+", q):
        wanted = int(q.lstrip("#"))
        id_hit = next((k for k, i in enumerate(ids) if i == wanted), None) if wanted < tok.n_vocab else None
    if q.startswith("#") and q[1:].isdigit():
        matches = [id_hit] if id_hit is not None else []
    elif re.fullmatch(r"0x[0-9a-fA-F]+", q) and len(q) % 2 == 0:
        needle = bytes.fromhex(q[2:])
        matches = [k for k, b in enumerate(data) if needle in b]
    elif q:
        matches = [k for k, t in enumerate(texts) if q in t]
        if id_hit is not None:
            matches = [id_hit] + [k for k in matches if k != id_hit]
    else:
        matches = range(len(ids))
    if partial_only:
        matches = [k for k in matches if not is_utf8(data[k])]
    total = len(matches)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    rows = []
    merges = merge_list(tok) if tok.n_merges and isinstance(tok, toklib.BPETokenizer) else None
    for k in list(matches[(page - 1) * per_page: page * per_page]):
        token_id, b = ids[k], data[k]
        row = {"id": token_id, "hex": hex_bytes(b), "length": len(b), "special": token_id in specials,
               "utf8": is_utf8(b), "text": visible_whitespace(texts[k]) if is_utf8(b) else None}
        if merges is not None and token_id >= 256 and token_id - 256 < len(merges):
            m = merges[token_id - 256]
            row["parents"] = [(m.left, show_bytes(tok.token_bytes(m.left))), (m.right, show_bytes(tok.token_bytes(m.right)))]
        rows.append(row)
    return {"q": q, "total": total, "page": page, "pages": pages, "rows": rows, "size": len(ids)}

