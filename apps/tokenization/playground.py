"""What the playground and the tokenize/detokenize API compute from a runtime tokenizer: ids (cached, and on two
threads for long text), the panes' segments and numbers, the "why tokenization matters" sentences, the API's token
JSON and decoding ids a person typed.

Pure functions over workers.gpt.tokenizers objects (no Django, no database): selectors.py loads the tokenizer from its
row and calls these. The merge explorer (merges.py) and the vocabulary browser (vocabulary.py) reuse the byte display
helpers at the end.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import operator
import json
import os
import re
import threading
from collections import OrderedDict

import regex

from apps.corpora.text import safe_spans
from apps.system.templatetags.labtext import visible_whitespace
from workers.gpt import tokenizers as toklib

FIRST_WINDOW = 1500  # segments rendered with the page; the rest arrive as the user scrolls ("render lazily")
MORE_WINDOW = 4000  # segments per lazily loaded window
IDS_PREVIEW = 12  # ids quoted in the explanation

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


def hex_bytes(b: bytes) -> str:
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
                          "example_bytes": hex_bytes(example["text"].encode("utf-8"))})
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
        # itemgetter picks them all in one C call (a fifth faster than map over __getitem__ on 30,000 ids); of one
        # id it would give the item itself, not a tuple
        pick = operator.itemgetter(*ids) if len(ids) > 1 else (lambda f: [f[i] for i in ids])
        try:
            return b",".join(pick(fragments))
        except TypeError:  # some id not seen before: build the missing fragments, then join again
            with self.lock:
                for token_id in set(ids):
                    if fragments[token_id] is None:
                        fragments[token_id] = self.fragment(token_id)
            return b",".join(pick(fragments))


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
# Token bytes for display (the merge explorer and the vocabulary browser too)


def show_bytes(b: bytes) -> str:
    """Token bytes for display: text with visible whitespace, or <hex> where they are not UTF-8 on their own."""
    try:
        return visible_whitespace(b.decode("utf-8"))
    except UnicodeDecodeError:
        return "<" + hex_bytes(b) + ">"


def is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
