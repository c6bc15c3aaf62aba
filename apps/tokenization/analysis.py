"""What the playground, the merge explorer, the vocabulary browser and the API compute from a runtime tokenizer.

Pure functions over workers.gpt.tokenizers objects (no Django, no database): selectors.py loads the tokenizer from its
row and calls these. Everything a page shows as a number is computed here, so the tests can check it directly.
"""

from __future__ import annotations

import array
import functools
import hashlib
import itertools
import json
import os
import re
import threading
from collections import OrderedDict

import regex

from apps.system.templatetags.labtext import visible_whitespace
from workers.gpt import tokenizers as toklib

FIRST_WINDOW = 1500  # segments rendered with the page; the rest arrive as the user scrolls ("render lazily")
MORE_WINDOW = 4000  # segments per lazily loaded window
MERGE_TEXT_MAX_CHARS = 5000  # the merge explorer runs BPE in Python: keep its sample short
IDS_PREVIEW = 12  # ids quoted in the explanation

# ----------------------------------------------------------------------------------------------------------------------
# Fingerprints: what decides the ids a tokenizer produces (used in shard cache keys)


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


# ----------------------------------------------------------------------------------------------------------------------
# Encoding, cached: the playground asks for the same text again when the user scrolls to the next window


class _EncodeCache:
    """The ids of the last few (tokenizer, text, allow_special) triples, kept compactly as uint32 arrays."""

    def __init__(self, size: int = 12):
        self.size = size
        self.items: OrderedDict[tuple, array.array] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, tok: toklib.Tokenizer, text: str, allow_special: bool) -> array.array:
        key = (id(tok), tok.name, allow_special, len(text), hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest())
        with self.lock:
            if (ids := self.items.get(key)) is not None:
                self.items.move_to_end(key)
                return ids
        ids = array.array("I", encode_fast(tok, text, allow_special))
        with self.lock:
            self.items[key] = ids
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return ids


_encode_cache = _EncodeCache()

PARALLEL_MIN_CHARS = 48_000  # longer text is cut at safe points and encoded on ENCODE_THREADS threads
# Two threads pay off where a core is free for the second one; on a 2-core machine the web server's other work
# takes it, and the thread handoff only costs (measured: 100 KB took 30 % longer on 2 busy cores).
ENCODE_THREADS = 2 if (os.cpu_count() or 1) >= 4 else 1


def encode_fast(tok: toklib.Tokenizer, text: str, allow_special: bool = False) -> list[int]:
    """tok.encode(text, allow_special), with long text cut at safe points (apps.corpora.text.SAFE_CUT) and encoded
    by tiktoken on ENCODE_THREADS threads: the same ids (tests check it), faster where cores are free."""
    if ENCODE_THREADS < 2 or len(text) < PARALLEL_MIN_CHARS or not isinstance(tok, toklib.TiktokenTokenizer):
        return tok.encode(text, allow_special)
    from apps.corpora.text import safe_spans

    spans = safe_spans(text, 0, len(text), max(PARALLEL_MIN_CHARS // 4, len(text) // (2 * ENCODE_THREADS)))
    if len(spans) == 1:
        return tok.encode(text, allow_special)
    pieces = [text[a:b] for a, b in spans]
    if allow_special:
        batches = tok.encoding.encode_batch(pieces, num_threads=ENCODE_THREADS, allowed_special="all")
    else:
        batches = tok.encoding.encode_ordinary_batch(pieces, num_threads=ENCODE_THREADS)
    return list(itertools.chain.from_iterable(batches))


def encode(tok: toklib.Tokenizer, text: str, allow_special: bool = False) -> array.array:
    """encode_fast, cached. Raises toklib.TokenizerError (a character tokenizer meeting an unknown character)."""
    return _encode_cache.get(tok, text, allow_special)


# ----------------------------------------------------------------------------------------------------------------------
# Playground panes


def _hex(b: bytes) -> str:
    return " ".join(f"{x:02x}" for x in b)


def _spaced(h: str) -> str:
    """'e4bda0' -> 'e4 bd a0'"""
    return " ".join(h[j:j + 2] for j in range(0, len(h), 2))


def segments_window(tok: toklib.Tokenizer, ids, start: int, seg_start: int, limit: int, *, show_ws: bool) -> dict:
    """Segments for ids[start:], at most `limit` of them, numbered from seg_start.

    A segment is the smallest run of ids that decodes to whole characters (a CJK character or an emoji may take
    several byte-level tokens); one that never completes (ids cut mid-character) is shown as its bytes.
    Returns {"segments": [...], "next": id offset to continue from or None, "next_seg": segment number}."""
    n = len(ids)
    end = min(n, start + limit)
    chunk = list(ids[start:end])
    raw = tok.segments_for_ids(chunk)
    # a character cut at the window's edge: take a few more ids (a UTF-8 character is at most 4 bytes)
    while raw and raw[-1]["text"] is None and end < n and end - start < limit + 8:
        end += 1
        chunk.append(ids[end - 1])
        raw = tok.segments_for_ids(chunk)
    segments = []
    for k, seg in enumerate(raw):
        seg_ids = seg["ids"]
        text = seg["text"]
        item = {"i": seg_start + k, "c": (seg_start + k) % 8, "ids": seg_ids, "special": bool(seg.get("special")),
                "ids_text": " ".join(map(str, seg_ids))}
        if len(seg_ids) > 1 or text is None:
            item["id_bytes"] = [(i, _spaced(h)) for i, h in zip(seg_ids, seg["bytes_hex"])]
        if text is None:  # bytes that never become a character
            item["partial"] = True
            item["display"] = " ".join(f"<{_spaced(h)}>" for h in seg["bytes_hex"])
            item["title"] = (f"ids {' '.join(map(str, seg_ids))}: bytes {' | '.join(map(_spaced, seg['bytes_hex']))}"
                             f" — not a whole UTF-8 character")
        else:
            display = visible_whitespace(text) if show_ws and not item["special"] else text
            # newlines go after the span, so an id shown beside the token stays on the token's line
            stripped = display.rstrip("\n")
            item["display"], item["nl"] = stripped, display[len(stripped):]
            if len(seg_ids) > 1:
                item["multi"] = True
                item["title"] = (f"{text!r} is {len(seg_ids)} tokens, each a piece of its UTF-8 bytes: " +
                                 ", ".join(f"{i} <{_spaced(h)}>" for i, h in zip(seg_ids, seg["bytes_hex"])))
            elif item["special"]:
                item["title"] = f"special token {text}: id {seg_ids[0]}"
            else:
                item["title"] = f"{text!r}: id {seg_ids[0]}"
        segments.append(item)
    return {"segments": segments, "next": end if end < n else None, "next_seg": seg_start + len(segments)}


def pane_stats(text: str, n_tokens: int) -> dict:
    n_chars = len(text)
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    return {"tokens": n_tokens, "chars": n_chars, "bytes": n_bytes,
            "chars_per_token": n_chars / n_tokens if n_tokens else None,
            "bytes_per_token": n_bytes / n_tokens if n_tokens else None}


def find_special_strings(tok: toklib.Tokenizer, text: str) -> list[dict]:
    """Special-token strings that occur in text (each with its count and id), so the page can say how they are
    being treated."""
    found = []
    for s, token_id in sorted(tok.special_tokens.items(), key=lambda item: item[1]):
        if (count := text.count(s)) > 0:
            found.append({"text": s, "id": token_id, "count": count,
                          "as_text_ids": tok.encode(s, allow_special=False)})
    return found


# ----------------------------------------------------------------------------------------------------------------------
# "Why tokenization matters": sentences with numbers from the text on screen

_LONG_WORD = regex.compile(r"[\p{L}\p{M}]{7,}")
_NUMBER = regex.compile(r"\p{N}{4,}")


def insights(text: str, panes: list[dict]) -> list[dict]:
    """Facts about this text under these tokenizers. Each pane: {"name", "tok", "ids", "stats"} (no error)."""
    ok = [p for p in panes if p.get("ids") is not None]
    if not text or not ok:
        return []
    facts: list[dict] = []
    first = ok[0]
    facts.append({"kind": "sees", "name": first["name"], "chars": len(text), "tokens": len(first["ids"]),
                  "ids": list(first["ids"][:IDS_PREVIEW]), "more": len(first["ids"]) > IDS_PREVIEW})
    if len(ok) >= 2:
        ranked = sorted(ok, key=lambda p: p["stats"]["tokens"])
        best, worst = ranked[0], ranked[-1]
        if best["stats"]["tokens"] and worst["stats"]["tokens"] > best["stats"]["tokens"]:
            ratio = worst["stats"]["tokens"] / best["stats"]["tokens"]
            facts.append({"kind": "compare", "best": best["name"], "worst": worst["name"],
                          "best_tokens": best["stats"]["tokens"], "worst_tokens": worst["stats"]["tokens"],
                          "ratio": ratio,
                          "best_context_chars": round(1024 * best["stats"]["chars_per_token"]),
                          "worst_context_chars": round(1024 * worst["stats"]["chars_per_token"])})
    for pane in ok:
        multi = [s for s in pane["tok"].segments_for_ids(list(pane["ids"][:4000])) if len(s["ids"]) > 1 and s["text"]]
        if multi:
            example = max(multi, key=lambda s: len(s["ids"]))
            facts.append({"kind": "multi", "name": pane["name"], "count": len(multi), "example": example["text"],
                          "example_tokens": len(example["ids"]),
                          "example_bytes": _hex(example["text"].encode("utf-8"))})
            break
    if match := max(_LONG_WORD.findall(text[:200_000]), key=len, default=None):
        tok = first["tok"]
        word = " " + match if f" {match}" in text else match
        try:
            ids = tok.encode(word)
            pieces = [tok.decode([i]) for i in ids]
            facts.append({"kind": "word", "name": first["name"], "word": match, "tokens": len(ids), "pieces": pieces})
        except toklib.TokenizerError:
            pass
    if match := _NUMBER.search(text):
        tok = first["tok"]
        try:
            ids = tok.encode(match.group())
            facts.append({"kind": "number", "name": first["name"], "number": match.group(), "tokens": len(ids),
                          "pieces": [tok.decode([i]) for i in ids]})
        except toklib.TokenizerError:
            pass
    return facts


# ----------------------------------------------------------------------------------------------------------------------
# The API's token list: per-token JSON built once per tokenizer and id, then joined (the hot path of /api/tokenize)


class _TokenJson:
    def __init__(self, tok: toklib.Tokenizer):
        self.tok = tok
        self.fragments: list[bytes | None] = [None] * tok.n_vocab
        self.lock = threading.Lock()

    def fragment(self, token_id: int) -> bytes:
        b = self.tok.token_bytes(token_id)
        return json.dumps({"id": token_id, "text": b.decode("utf-8", "replace"), "bytes": list(b)},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def join(self, ids) -> bytes:
        """b'{...},{...}' for the ids, in order."""
        fragments = self.fragments
        try:
            return b",".join(map(fragments.__getitem__, ids))
        except TypeError:  # some id not seen before: build the missing fragments, then join again
            with self.lock:
                for token_id in set(ids):
                    if fragments[token_id] is None:
                        fragments[token_id] = self.fragment(token_id)
            return b",".join(map(fragments.__getitem__, ids))


_token_json: dict[int, _TokenJson] = {}
_token_json_lock = threading.Lock()


def tokens_json(tok: toklib.Tokenizer, ids) -> bytes:
    """The JSON array body (without brackets, UTF-8) of [{"id", "text", "bytes"}, ...] for ids."""
    with _token_json_lock:
        builder = _token_json.get(id(tok))
        if builder is None or builder.tok is not tok:
            builder = _token_json[id(tok)] = _TokenJson(tok)
    return builder.join(ids)


# ----------------------------------------------------------------------------------------------------------------------
# Decoding ids typed by a person

_ID_ITEM = re.compile(r"[\s,\[\]]+")


def parse_ids(raw: str) -> list[int]:
    """'[15496, 995]', '15496 995' or '15496,995' -> [15496, 995]. Raises ValueError naming the first bad item."""
    items = [item for item in _ID_ITEM.split(raw.strip()) if item]
    ids = []
    for position, item in enumerate(items, 1):
        try:
            value = int(item)
        except ValueError:
            raise ValueError(f"item {position} ({item[:20]!r}) is not a whole number: token ids are integers "
                             f"such as 15496, separated by spaces or commas") from None
        if value < 0:
            raise ValueError(f"item {position} ({value}) is negative: token ids start at 0")
        ids.append(value)
    return ids


def check_ids(tok: toklib.Tokenizer, ids: list[int]) -> None:
    """Raise toklib.TokenizerError for the first id the tokenizer does not have (out of range, or unused)."""
    for position, token_id in enumerate(ids, 1):
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < tok.n_vocab:
            raise toklib.TokenizerError(f"id {token_id!r} (item {position}) is out of range: {tok.name} has ids "
                                        f"0..{tok.n_vocab - 1}")
    for position, token_id in enumerate(dict.fromkeys(ids), 1):
        try:
            tok.token_bytes(token_id)
        except toklib.TokenizerError:
            raise toklib.TokenizerError(f"id {token_id} is not a token of {tok.name}: it lies in the range but "
                                        f"is unused (cl100k_base and o200k_base skip some ids below their "
                                        f"special tokens)") from None


def decode(tok: toklib.Tokenizer, ids: list[int]) -> dict:
    check_ids(tok, ids)
    data = tok.decode_bytes(ids)
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    return {"text": data.decode("utf-8", "replace"), "bytes": len(data), "valid_utf8": valid}


# ----------------------------------------------------------------------------------------------------------------------
# The merge explorer


@functools.lru_cache(maxsize=8)
def _merge_index(tok: toklib.Tokenizer) -> dict[int, int]:
    """rank (token id) -> merge number (1-based) for every merged token."""
    return {m.rank: k for k, m in enumerate(tok.merges(), 1)}


@functools.lru_cache(maxsize=8)
def _merges(tok: toklib.Tokenizer) -> tuple:
    return tuple(tok.merges())


def merge_counts(tok: toklib.Tokenizer) -> list[int] | None:
    """How often each pair occurred in the training text when it was merged (trained BPEs only)."""
    return getattr(tok, "merge_counts", None)


def merge_info(tok: toklib.Tokenizer, k: int) -> dict:
    """Merge number k (1-based): which two tokens join into which bytes, and (trained) how often it occurred."""
    m = _merges(tok)[k - 1]
    counts = merge_counts(tok)
    left, right = tok.token_bytes(m.left), tok.token_bytes(m.right)
    return {"n": k, "rank": m.rank, "left": m.left, "right": m.right,
            "left_text": _show(left), "right_text": _show(right), "merged_text": _show(m.merged),
            "merged_hex": _hex(m.merged), "count": counts[k - 1] if counts else None}


def _show(b: bytes) -> str:
    """Token bytes for display: text with visible whitespace, or <hex> where they are not UTF-8 on their own."""
    try:
        return visible_whitespace(b.decode("utf-8"))
    except UnicodeDecodeError:
        return "<" + _hex(b) + ">"


def merge_step(tok: toklib.Tokenizer, text: str, n: int) -> dict:
    """The sample text with only the first n merges applied, and what merge n did to it."""
    ids = tok.encode_with_merge_limit(text, n)
    index = _merge_index(tok)
    window = segments_window(tok, ids, 0, 0, 100_000, show_ws=True)["segments"]
    made_now = _merges(tok)[n - 1].rank if n > 0 else None
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
    import math

    n = len(counts)
    step = max(1, n // points)
    sample = [(k, counts[k]) for k in range(0, n, step)] + [(n - 1, counts[-1])]
    top = math.log10(max(counts) + 1)
    coords = " ".join(f"{(k / max(1, n - 1)) * width:.1f},{height - (math.log10(c + 1) / top) * height:.1f}"
                      for k, c in sample)
    marker = None if not marker_n else round((marker_n - 1) / max(1, n - 1) * width, 1)
    return {"points": coords, "width": width, "height": height, "max": max(counts), "min": min(counts), "n": n,
            "marker": marker}


# ----------------------------------------------------------------------------------------------------------------------
# The vocabulary browser


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
        matches = [k for k in matches if not _is_utf8(data[k])]
    total = len(matches)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    rows = []
    merges = _merges(tok) if tok.n_merges and isinstance(tok, toklib.BPETokenizer) else None
    for k in list(matches[(page - 1) * per_page: page * per_page]):
        token_id, b = ids[k], data[k]
        row = {"id": token_id, "hex": _hex(b), "length": len(b), "special": token_id in specials,
               "utf8": _is_utf8(b), "text": visible_whitespace(texts[k]) if _is_utf8(b) else None}
        if merges is not None and token_id >= 256 and token_id - 256 < len(merges):
            m = merges[token_id - 256]
            row["parents"] = [(m.left, _show(tok.token_bytes(m.left))), (m.right, _show(tok.token_bytes(m.right)))]
        rows.append(row)
    return {"q": q, "total": total, "page": page, "pages": pages, "rows": rows, "size": len(ids)}


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
