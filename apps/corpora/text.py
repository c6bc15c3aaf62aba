"""Pure functions on corpus text: UTF-8 checking that says where it fails, statistics, and the train/val split.

No Django, no files: services.py reads and writes, this module only looks at bytes and strings."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import regex

TOP_N = 40  # how many characters / words the corpus page lists


class CorpusInputError(ValueError):
    """Text that cannot become a corpus; the message says why and what to do. status: the HTTP status to answer."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------------------------------------------------
# Decoding


def decode_utf8(data: bytes, *, source: str) -> tuple[str, dict]:
    """Decode an upload strictly as UTF-8 and normalize it: a leading byte-order mark is dropped and Windows line
    endings (CRLF) become LF. Returns (text, notes). Raises CorpusInputError naming the first invalid byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusInputError(_utf8_error_message(data, exc, source)) from None
    notes = {}
    if text.startswith("\ufeff"):
        text = text[1:]
        notes["bom_removed"] = True
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
        notes["crlf_normalized"] = True
    if (nul := text.find("\x00")) >= 0:
        line = text.count("\n", 0, nul) + 1
        raise CorpusInputError(f"{source} contains a NUL character (line {line:,}): it looks like a binary file, "
                               f"not text. Upload plain .txt files.")
    return text, notes


def _utf8_error_message(data: bytes, exc: UnicodeDecodeError, source: str) -> str:
    at = exc.start
    line_start = data.rfind(b"\n", 0, at) + 1
    line = data.count(b"\n", 0, at) + 1
    column = len(data[line_start:at].decode("utf-8")) + 1  # everything before the first bad byte decodes
    bad = " ".join(f"0x{b:02X}" for b in data[at:max(exc.end, at + 1)])
    reason = {
        "invalid start byte": "cannot start a UTF-8 character",
        "invalid continuation byte": "starts a character that the next byte does not continue",
        "unexpected end of data": "starts a character that the file cuts off",
    }.get(exc.reason, exc.reason)
    before = data[max(line_start, at - 30):at].decode("utf-8", errors="replace")
    return (f"{source} is not valid UTF-8: byte {at:,} (line {line:,}, column {column:,}) is {bad}, which {reason} "
            f"(after “{before}”). It is probably in another encoding such as Latin-1 or Windows-1252: save it "
            f"as UTF-8 (in most editors: Save as… → Encoding: UTF-8) and upload it again.")


def join_documents(texts: list[str]) -> str:
    """Several files become one corpus: each ends with a newline, and a blank line separates them."""
    if len(texts) == 1:
        return texts[0]
    return "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)


# ----------------------------------------------------------------------------------------------------------------------
# Statistics

_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+(?:['’][\p{L}\p{M}\p{N}]+)*")
_HAN_RUN = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]+")
_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]")


def count_lines(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def corpus_stats(text: str) -> dict:
    """What the corpus page shows: distinct characters (all of them, sorted: a character tokenizer's vocabulary),
    the most frequent characters and words, and how the characters divide into classes."""
    chars = Counter(text)
    classes = Counter()
    cjk = 0
    ascii_count = 0
    for ch, n in chars.items():
        classes[_char_class(ch)] += n
        if ord(ch) < 128:
            ascii_count += n
        elif _CJK.match(ch):
            cjk += n
    letters = classes["letters"] or 1
    words = _cjk_bigrams(text) if cjk / letters > 0.3 else _words(text)
    return {
        "distinct_chars": len(chars),
        "alphabet": "".join(sorted(chars)),
        "top_chars": [[ch, n] for ch, n in chars.most_common(TOP_N)],
        "classes": dict(classes.most_common()),
        "ascii_chars": ascii_count,
        "cjk_chars": cjk,
        "max_line_chars": max((len(line) for line in text.split("\n")), default=0),
        "words": words,
    }


def _char_class(ch: str) -> str:
    if ch.isspace():
        return "whitespace"
    category = unicodedata.category(ch)
    return {"L": "letters", "M": "letters", "N": "digits", "P": "punctuation", "S": "symbols"}.get(category[0], "other")


def _words(text: str) -> dict:
    # Split on whitespace in C first, then find words inside each distinct piece: much faster than a regex over
    # the whole text, and the same words.
    counts: Counter[str] = Counter()
    for piece, n in Counter(text.split()).items():
        for word in _WORD.findall(piece):
            counts[word.casefold()] += n
    return {"kind": "words", "total": sum(counts.values()), "distinct": len(counts),
            "top": [[w, n] for w, n in counts.most_common(TOP_N)]}


def _cjk_bigrams(text: str) -> dict:
    counts: Counter[str] = Counter()
    for run in _HAN_RUN.findall(text):
        counts.update(run[i:i + 2] for i in range(len(run) - 1))
    return {"kind": "bigrams", "total": sum(counts.values()), "distinct": len(counts),
            "top": [[w, n] for w, n in counts.most_common(TOP_N)]}


# ----------------------------------------------------------------------------------------------------------------------
# Safe cut points and the split

# A cut here never changes how the text tokenizes: right after a newline that follows a non-space character, before
# a letter. Under the GPT-2, GPT-4 (cl100k) and o200k split patterns that newline always ends a pre-token and the
# letter always starts one, so encoding the two sides separately gives the same ids as encoding the whole.
SAFE_CUT = re.compile(r"(?<=\S\n)(?=[^\W\d_])")


def safe_cut(text: str, at: int, *, limit: int | None = None) -> int | None:
    """The first safe cut at or after `at` (and before `limit`), or None."""
    match = SAFE_CUT.search(text, at, len(text) if limit is None else limit)
    return match.start() if match else None


def safe_spans(text: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """(begin, end) spans covering text[start:end], each ending at the first safe cut after `size` characters (or
    at `end`): encoding them one by one gives exactly the ids of encoding text[start:end] at once."""
    spans = []
    at = start
    while at < end:
        if end - at <= size:
            spans.append((at, end))
            break
        cut = safe_cut(text, at + size, limit=end)
        cut = end if cut is None else cut
        spans.append((at, cut))
        at = cut
    return spans


def split_point(text: str, val_fraction: float) -> dict:
    """Where training text ends and validation text begins: the first line start (a safe cut) at or after
    (1 - val_fraction) of the characters, nanoGPT style (the end of the text is held out)."""
    n = len(text)
    target = min(n, round(n * (1 - val_fraction)))
    cut = safe_cut(text, target)
    if cut is None:  # no line start after the target: cut exactly there
        cut = target
    if cut >= n and n > 1 and val_fraction > 0:  # keep at least one character for validation
        cut = n - 1
    train_bytes = len(text[:cut].encode("utf-8"))
    total_bytes = len(text.encode("utf-8"))
    return {"char": cut, "byte": train_bytes, "line": text.count("\n", 0, cut) + 1,
            "train_chars": cut, "val_chars": n - cut, "train_bytes": train_bytes, "val_bytes": total_bytes - train_bytes}
