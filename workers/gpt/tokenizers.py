"""
Tokenizers for LLM Lab: OpenAI's tiktoken encodings (loaded offline), a character-level tokenizer, byte-level BPE
training whose result tiktoken can run, and the byte-level BPEs that come with imported models.

Why one file of ~900 lines: these are the implementations of one small interface (`Tokenizer`) and share its
private helpers (the .tiktoken format, the ranks directory, tiktoken's merge rule in Python); the web process, the
worker and the importers all take them from here. Sections, in order: the .tiktoken format and tokenizer
directories, built-in encodings, the interface, tiktoken-run BPE, character-level, BPE training, imported BPE.

This module imports neither Django nor torch: the web process imports it for the tokenizer playground.

Every tokenizer speaks one small interface (`Tokenizer`):

    tok = get_builtin("gpt2")               # or CharTokenizer.from_text(text), train_bpe(text, 512), load_bpe(dir),
                                            # load_imported(dir) (a model's own byte-level BPE)
    tok.encode("hello world")               # [31373, 995]; encode(text, allow_special=True) for <|endoftext|>
    tok.decode([31373, 995])                # "hello world"
    tok.segments("你好")                     # playground spans; a character split over tokens is one span
    tok.merges()[:1]                        # [Merge(rank=256, left=220, right=83, merged=b" t")]
    tok.encode_with_merge_limit("hi", 10)   # only the first 10 merges applied (the merge-explorer slider)

Built-in encodings are read from data/tiktoken/*.tiktoken.gz in the repository and checked against the sha256 that
tiktoken 0.14.0 itself checks. tiktoken's own loader is never called, so nothing is ever downloaded.

Why a trained BPE is exact under tiktoken. The trainer below is minbpe's: a new token T is made from a pair (a, b)
that sits side by side in the training text after the earlier merges. Applying merges in rank order to the bytes of
T alone then yields exactly [a, b] before T's rank (merges inside a span never depend on text outside it unless they
cross its border, and none can, since a and b tile the span). From that it follows that (1) no two merges ever make
the same bytes, and (2) whenever tiktoken finds two neighbours whose concatenation is a token, they are that token's
own merge pair, so tiktoken's "lowest rank of concatenated bytes" rule and minbpe's "lowest rank of merge pair" rule
pick the same merge at every step (and tiktoken's whole-chunk shortcut agrees too). The tests check it on held-out
English, Chinese and emoji.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import regex
import tiktoken

from .fileio import atomic_write_bytes

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "tiktoken"

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
ENDOFPROMPT = "<|endofprompt|>"

# The split patterns, copied from tiktoken_ext/openai_public.py (tiktoken 0.14.0); a test checks they still match.
R50K_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Pre-tokenization patterns a trained BPE may use, by the name of the model family that introduced them.
PATTERNS = {"gpt2": R50K_PAT_STR, "gpt4": CL100K_PAT_STR}

MIN_VOCAB_SIZE = 256  # the 256 single bytes
MAX_VOCAB_SIZE = 65536  # ids fit in uint16, as nanoGPT's token files store them


class TokenizerError(ValueError):
    """A tokenizer could not be loaded, built or used; the message says what to do next."""


class TokenizerDataError(TokenizerError):
    """A tokenizer file is missing, corrupt or does not match its recorded sha256."""


class TokenizerTrainingCancelled(Exception):
    """train_bpe stopped because should_stop() returned True."""


class Merge(NamedTuple):
    """One BPE merge: the tokens `left` and `right` next to each other become the token `rank` (its id)."""

    rank: int
    left: int
    right: int
    merged: bytes


# ----------------------------------------------------------------------------------------------------------------------
# The .tiktoken file format: one line per token, "base64(token bytes) rank\n", in rank order.


def dump_ranks(mergeable_ranks: dict[bytes, int]) -> bytes:
    """Serialize ranks in the .tiktoken format (what tiktoken's dump_tiktoken_bpe writes, without needing blobfile)."""
    lines = [base64.b64encode(token) + b" " + str(rank).encode() + b"\n"
             for token, rank in sorted(mergeable_ranks.items(), key=lambda item: item[1])]
    return b"".join(lines)


def parse_ranks(contents: bytes, *, source: str = "<bytes>") -> dict[bytes, int]:
    """Parse the .tiktoken format (as tiktoken's load_tiktoken_bpe does, without its download-and-cache step)."""
    ranks = {}
    for line in contents.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except Exception as e:
            raise TokenizerDataError(f"{source}: cannot parse line {line[:80]!r} as 'base64 rank'") from e
    return ranks


def read_ranks_file(path: str | Path, expected_sha256: str | None = None) -> tuple[dict[bytes, int], bytes]:
    """Read a .tiktoken (or gzipped .tiktoken.gz) file, check the sha256 of its uncompressed bytes, parse it.

    Returns (mergeable_ranks, uncompressed bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TokenizerDataError(
            f"tokenizer file {path} is missing; the repository ships the tiktoken files in data/tiktoken/ "
            f"(restore them from version control, or pass data_dir= pointing at a copy)") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise TokenizerDataError(f"tokenizer file {path} is not a valid gzip file ({e}); restore it from "
                                     f"version control") from e
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise TokenizerDataError(
                f"tokenizer file {path} is corrupt: sha256 of its contents is {actual}, expected {expected_sha256}; "
                f"restore the file from version control")
    return parse_ranks(raw, source=str(path)), raw


# A tokenizer directory: the ranks in the .tiktoken format beside a JSON file with everything else. Both on-disk
# tokenizer formats (a BPE trained here, a byte-level BPE imported with a model) are written and read by these two.


def save_ranks_dir(directory: str | Path, *, mergeable_ranks: dict[bytes, int], ranks_file: str, meta_file: str,
                   meta: dict) -> Path:
    """Write the ranks file and the JSON (meta plus the ranks file's name and sha256) into directory, each atomically
    and the JSON last: a directory whose JSON exists is complete."""
    directory = Path(directory)
    ranks_bytes = dump_ranks(mergeable_ranks)
    meta = {**meta, "ranks_file": ranks_file, "ranks_sha256": hashlib.sha256(ranks_bytes).hexdigest()}
    atomic_write_bytes(directory / ranks_file, ranks_bytes)
    atomic_write_bytes(directory / meta_file, (json.dumps(meta, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    return directory


def load_ranks_dir(directory: str | Path, *, meta_file: str, fmt: str, writer: str) -> tuple[dict, dict[bytes, int]]:
    """(meta, mergeable_ranks) of what save_ranks_dir wrote, checking the format name, version 1 and the ranks file's
    sha256; TokenizerDataError naming the file otherwise. writer names the function that writes this format."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / meta_file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerDataError(f"{directory / meta_file} is missing: is {directory} a directory written by "
                                 f"{writer}?") from None
    if meta.get("format") != fmt or meta.get("version") != 1:
        raise TokenizerDataError(f"{directory / meta_file} is not a {fmt} version 1 file")
    ranks, _ = read_ranks_file(directory / meta["ranks_file"], meta["ranks_sha256"])
    return meta, ranks


# ----------------------------------------------------------------------------------------------------------------------
# Built-in encodings


class _Builtin(NamedTuple):
    file: str  # the shipped ranks file under data_dir
    file_sha256: str  # sha256 of its uncompressed contents
    pat_str: str
    special_tokens: dict[str, int]
    n_vocab: int  # max token id + 1 (cl100k and o200k have unused ids below their special tokens)
    n_mergeable: int  # how many tokens mergeable_ranks holds (256 single bytes + merges)
    description: str
    extra_sha256: str | None = None  # p50k_base: sha256 of the ranks after adding the space runs


_R50K_FILE = ("r50k_base.tiktoken.gz", "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930")
_CL100K_FILE = ("cl100k_base.tiktoken.gz", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7")
_O200K_FILE = ("o200k_base.tiktoken.gz", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d")
P50K_SHA256 = "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"

_BUILTINS: dict[str, _Builtin] = {
    "gpt2": _Builtin(*_R50K_FILE, R50K_PAT_STR, {ENDOFTEXT: 50256}, 50257, 50256,
                     "GPT-2's byte-level BPE (same ranks as r50k_base)"),
    "r50k_base": _Builtin(*_R50K_FILE, R50K_PAT_STR, {ENDOFTEXT: 50256}, 50257, 50256,
                          "GPT-3's encoding, identical to GPT-2's"),
    "p50k_base": _Builtin(*_R50K_FILE, R50K_PAT_STR, {ENDOFTEXT: 50256}, 50281, 50280,
                          "Codex: r50k_base plus tokens for runs of 2 to 25 spaces", extra_sha256=P50K_SHA256),
    "cl100k_base": _Builtin(*_CL100K_FILE, CL100K_PAT_STR,
                            {ENDOFTEXT: 100257, FIM_PREFIX: 100258, FIM_MIDDLE: 100259, FIM_SUFFIX: 100260,
                             ENDOFPROMPT: 100276}, 100277, 100256, "GPT-3.5 and GPT-4"),
    "o200k_base": _Builtin(*_O200K_FILE, O200K_PAT_STR, {ENDOFTEXT: 199999, ENDOFPROMPT: 200018}, 200019, 199998,
                           "GPT-4o"),
}
BUILTIN_NAMES: tuple[str, ...] = tuple(_BUILTINS)


def p50k_ranks_from_r50k(r50k_ranks: dict[bytes, int]) -> dict[bytes, int]:
    """p50k_base = r50k_base + the runs of 2..25 spaces, at ranks 50257..50280 (50256 stays <|endoftext|>)."""
    ranks = dict(r50k_ranks)
    for i, n_spaces in enumerate(range(2, 26)):
        ranks[b" " * n_spaces] = 50257 + i
    return ranks


def _builtin_spec(name: str) -> _Builtin:
    try:
        return _BUILTINS[name]
    except KeyError:
        raise TokenizerError(f"unknown built-in encoding {name!r}: choose one of {', '.join(BUILTIN_NAMES)}") from None


def _resolve_data_dir(data_dir: str | Path | None) -> Path:
    return DEFAULT_DATA_DIR if data_dir is None else Path(data_dir).resolve()


@functools.lru_cache(maxsize=None)
def _load_builtin_ranks(name: str, data_dir: Path) -> dict[bytes, int]:
    spec = _builtin_spec(name)
    ranks, _ = read_ranks_file(data_dir / spec.file, spec.file_sha256)
    if name == "p50k_base":
        ranks = p50k_ranks_from_r50k(ranks)
        actual = hashlib.sha256(dump_ranks(ranks)).hexdigest()
        if actual != spec.extra_sha256:
            raise TokenizerDataError(f"p50k_base built from {data_dir / spec.file} has sha256 {actual}, expected "
                                     f"{spec.extra_sha256}; restore the file from version control")
    if len(ranks) != spec.n_mergeable:
        raise TokenizerDataError(f"{data_dir / spec.file} holds {len(ranks)} tokens, {name} needs {spec.n_mergeable}")
    return ranks


def get_builtin(name: str, data_dir: str | Path | None = None) -> TiktokenTokenizer:
    """A built-in encoding (one of BUILTIN_NAMES) as a Tokenizer. Loaded once per process and data_dir."""
    return _get_builtin(name, _resolve_data_dir(data_dir))


@functools.lru_cache(maxsize=None)
def _get_builtin(name: str, data_dir: Path) -> TiktokenTokenizer:
    spec = _builtin_spec(name)
    ranks = _load_builtin_ranks("r50k_base" if name == "gpt2" else name, data_dir)
    # tiktoken's explicit_n_vocab check only fits encodings without unused ids (not cl100k_base, o200k_base)
    dense = len(ranks) + len(spec.special_tokens) == spec.n_vocab
    return TiktokenTokenizer(name=name, pat_str=spec.pat_str, mergeable_ranks=ranks,
                             special_tokens=dict(spec.special_tokens),
                             explicit_n_vocab=spec.n_vocab if dense else None)


def describe(name: str) -> dict:
    """What a built-in encoding is, without loading it: n_vocab, number of merges, split pattern, special tokens."""
    spec = _builtin_spec(name)
    return {"name": name, "kind": "tiktoken", "n_vocab": spec.n_vocab, "n_merges": spec.n_mergeable - 256,
            "pat_str": spec.pat_str, "special_tokens": dict(spec.special_tokens), "description": spec.description}


# ----------------------------------------------------------------------------------------------------------------------
# The common interface


class Tokenizer:
    """What the app needs from any tokenizer. Subclasses set name, kind, n_vocab, special_tokens and implement
    encode, decode_bytes and token_bytes; the rest is shared."""

    name: str
    kind: str  # "tiktoken" | "char" | "bpe"
    n_vocab: int  # max id + 1: the size an embedding table needs
    special_tokens: dict[str, int]

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text to ids. allow_special=False encodes "<|endoftext|>" and friends as plain text (never raises);
        allow_special=True turns them into their special ids."""
        raise NotImplementedError

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text, UTF-8 encoded)."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def merges(self) -> list[Merge]:
        """The merges in the order they apply (by rank). Empty for tokenizers without merges."""
        return []

    @property
    def n_merges(self) -> int:
        return 0

    def encode_with_merge_limit(self, text: str, n_merges: int, allow_special: bool = False) -> list[int]:
        """Encode applying only the first n_merges merges (0 = raw bytes, n_merges = self.n_merges = encode)."""
        if n_merges != 0:
            raise TokenizerError(f"{self.name} has no merges: n_merges must be 0, got {n_merges}")
        return self.encode(text, allow_special)

    def segments(self, text: str, allow_special: bool = False) -> list[dict]:
        """Encode text and group the ids for display, see segments_for_ids."""
        return self.segments_for_ids(self.encode(text, allow_special))

    def segments_for_ids(self, ids: Sequence[int]) -> list[dict]:
        """Group ids into the smallest runs that decode to whole characters.

        Each segment is {"text": str | None, "ids": [...]}; a special token also has "special": True. A character
        spread over several tokens (CJK, emoji in GPT-2) is one segment with several ids, and then "bytes_hex" lists
        each token's bytes in hex because at least one of them is not valid UTF-8 alone. "text" is None only for ids
        that never complete a character (e.g. a hand-made id list cut mid-character)."""
        specials = {i: s for s, i in self.special_tokens.items()}
        segments: list[dict] = []
        pending_ids: list[int] = []
        pending = b""

        def emit(text: str | None) -> None:
            segment = {"text": text, "ids": list(pending_ids)}
            if len(pending_ids) > 1 or text is None:  # some token alone is not valid UTF-8
                segment["bytes_hex"] = [self.token_bytes(i).hex() for i in pending_ids]
            segments.append(segment)
            pending_ids.clear()

        for token_id in ids:
            if token_id in specials:
                if pending_ids:
                    emit(None)
                    pending = b""
                segments.append({"text": specials[token_id], "ids": [token_id], "special": True})
                continue
            pending += self.token_bytes(token_id)
            pending_ids.append(token_id)
            try:
                text = pending.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a character is still incomplete: keep collecting
            emit(text)
            pending = b""
        if pending_ids:
            emit(None)
        return segments

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "n_vocab": self.n_vocab, "n_merges": self.n_merges,
                "pat_str": None, "special_tokens": dict(self.special_tokens)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind} n_vocab={self.n_vocab}>"


def _valid_unicode(text: str) -> str:
    """Replace lone surrogates (which UTF-8 cannot encode) by U+FFFD, as tiktoken does before encoding."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _bpe_chunk(ranks: dict[bytes, int], piece: bytes, max_rank: int | None = None) -> list[int]:
    """tiktoken's byte-pair merge, in Python: repeatedly merge the neighbours whose concatenation has the lowest rank
    (leftmost on ties), using only merged tokens of rank < max_rank (None: all). A chunk that is itself an allowed
    token is returned whole, as tiktoken does."""
    rank = ranks.get(piece)
    if rank is not None and (len(piece) == 1 or max_rank is None or rank < max_rank):
        return [rank]
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_i, best_rank = -1, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best_rank is None or r < best_rank):
                best_i, best_rank = i, r
        if best_rank is None or (max_rank is not None and best_rank >= max_rank):
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return [ranks[p] for p in parts]


def recover_merge(mergeable_ranks: dict[bytes, int], token: bytes) -> Merge:
    """The merge that makes `token` under tiktoken's rules (minbpe's recover_merges, for one token): byte-pair merge
    its bytes with only the ranks below its own; what is left are the two tokens it is merged from."""
    rank = mergeable_ranks[token]
    parts = _bpe_chunk(mergeable_ranks, token, max_rank=rank) if len(token) > 1 else [rank]
    if len(parts) != 2:
        raise TokenizerDataError(f"token {token!r} (rank {rank}) is not reachable by one merge of lower-ranked "
                                 f"tokens (it splits into {len(parts)} parts), so it has no place in a merge tree")
    return Merge(rank, parts[0], parts[1], token)


class TiktokenTokenizer(Tokenizer):
    """A byte-level BPE run by tiktoken: the built-in OpenAI encodings, and (as BPETokenizer) the ones trained here."""

    kind = "tiktoken"

    def __init__(self, *, name: str, pat_str: str, mergeable_ranks: dict[bytes, int], special_tokens: dict[str, int],
                 explicit_n_vocab: int | None = None):
        self.name = name
        self.pat_str = pat_str
        self.mergeable_ranks = mergeable_ranks
        self.special_tokens = dict(special_tokens)
        self.encoding = tiktoken.Encoding(name, pat_str=pat_str, mergeable_ranks=mergeable_ranks,
                                          special_tokens=self.special_tokens, explicit_n_vocab=explicit_n_vocab)
        self.n_vocab = self.encoding.n_vocab
        self._pattern = regex.compile(pat_str)
        self._special_pattern = (regex.compile("|".join(regex.escape(s) for s in
                                                        sorted(self.special_tokens, key=len, reverse=True)))
                                 if self.special_tokens else None)

    # encoding and decoding: tiktoken does the work

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        if allow_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = list(ids)
        try:
            return self.encoding.decode_bytes(ids)
        except (KeyError, ValueError, OverflowError, TypeError):
            bad = next((i for i in ids if not self._is_token(i)), None)
            raise TokenizerError(f"{self.name} cannot decode id {bad!r}: ids are 0..{self.n_vocab - 1}, "
                                 f"minus unused ones") from None

    def token_bytes(self, token_id: int) -> bytes:
        try:
            return self.encoding.decode_single_token_bytes(token_id)
        except (KeyError, ValueError, OverflowError, TypeError):
            raise TokenizerError(f"{self.name} has no token with id {token_id!r} "
                                 f"(ids are 0..{self.n_vocab - 1}, minus unused ones)") from None

    def _is_token(self, token_id) -> bool:
        try:
            self.encoding.decode_single_token_bytes(token_id)
            return True
        except Exception:
            return False

    # the merge tree

    @functools.cached_property
    def _merge_ranks(self) -> list[int]:
        """Ranks of the multi-byte tokens, ascending: merge number k (0-based) makes the token of rank
        _merge_ranks[k]. Defined this way, not as 256 + k, so no assumption is made about where single bytes sit."""
        return sorted(rank for token, rank in self.mergeable_ranks.items() if len(token) > 1)

    @property
    def n_merges(self) -> int:
        return len(self._merge_ranks)

    @functools.cached_property
    def _merges(self) -> list[Merge]:
        by_rank = {rank: token for token, rank in self.mergeable_ranks.items()}
        return [recover_merge(self.mergeable_ranks, by_rank[rank]) for rank in self._merge_ranks]

    def merges(self) -> list[Merge]:
        """The merge tree, recovered from the ranks (about 0.5 s for gpt2, 3 s for o200k the first time)."""
        return list(self._merges)

    def encode_with_merge_limit(self, text: str, n_merges: int, allow_special: bool = False) -> list[int]:
        """Encode with only the first n_merges merges (the n_merges lowest-ranked multi-byte tokens) available.

        0 gives one id per byte; self.n_merges gives exactly encode(text). Runs tiktoken's algorithm in Python, so
        keep the text playground-sized."""
        if not isinstance(n_merges, int) or not 0 <= n_merges <= self.n_merges:
            raise TokenizerError(f"n_merges must be an integer from 0 to {self.n_merges}, got {n_merges!r}")
        # the rank of the first merge *not* applied; deliberately no shortcut to tiktoken at the full count, so the
        # tests' "full limit equals encode" checks this Python path against tiktoken
        max_rank = self._merge_ranks[n_merges] if n_merges < self.n_merges else None
        ids: list[int] = []
        for piece, special_id in self._split_special(_valid_unicode(text), allow_special):
            if special_id is not None:
                ids.append(special_id)
                continue
            for chunk in self._pattern.findall(piece):
                ids.extend(_bpe_chunk(self.mergeable_ranks, chunk.encode("utf-8"), max_rank))
        return ids

    def _split_special(self, text: str, allow_special: bool) -> Iterator[tuple[str | None, int | None]]:
        """Yield (text, None) for ordinary stretches and (None, id) for special tokens (only if allowed)."""
        if not allow_special or self._special_pattern is None:
            yield text, None
            return
        start = 0
        for m in self._special_pattern.finditer(text):
            if m.start() > start:
                yield text[start:m.start()], None
            yield None, self.special_tokens[m.group()]
            start = m.end()
        if start < len(text):
            yield text[start:], None

    def describe(self) -> dict:
        return {**super().describe(), "pat_str": self.pat_str}


# ----------------------------------------------------------------------------------------------------------------------
# Character-level tokenizer (nanoGPT's shakespeare_char)


class CharTokenizer(Tokenizer):
    """One id per character: the sorted set of characters of a corpus, numbered in order.

    Encoding a character that is not in the vocabulary raises TokenizerError naming it; there is deliberately no
    "unknown" id, so a model never silently learns from (or generates) a placeholder. Build the vocabulary from a
    text that contains every character you will encode."""

    kind = "char"

    def __init__(self, chars: Iterable[str], name: str = "char"):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise TokenizerError("a character vocabulary must hold single characters")
        if len(set(chars)) != len(chars):
            raise TokenizerError("a character vocabulary must not repeat characters")
        if not chars:
            raise TokenizerError("a character vocabulary needs at least one character: the corpus is empty")
        self.name = name
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.n_vocab = len(chars)
        self.special_tokens = {}

    @classmethod
    def from_text(cls, text: str, name: str = "char") -> CharTokenizer:
        return cls(sorted(set(text)), name=name)

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            missing = sorted({c for c in text if c not in self.stoi})
            shown = ", ".join(repr(c) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise TokenizerError(f"{len(missing)} character(s) not in the vocabulary of {self.name!r}: {shown}; "
                                 f"rebuild the tokenizer from a text containing them, or remove them") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in self._check_ids(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def token_bytes(self, token_id: int) -> bytes:
        return self.chars[self._check_ids([token_id])[0]].encode("utf-8")

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        ids = list(ids)
        for i in ids:
            if not (isinstance(i, int) and 0 <= i < self.n_vocab):
                raise TokenizerError(f"{self.name} has no token with id {i!r} (ids are 0..{self.n_vocab - 1})")
        return ids

    def to_json(self) -> str:
        return json.dumps({"kind": "char", "name": self.name, "chars": "".join(self.chars)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> CharTokenizer:
        obj = json.loads(data)
        if obj.get("kind") != "char" or not isinstance(obj.get("chars"), str):
            raise TokenizerDataError('not a character tokenizer: expected {"kind": "char", "chars": "..."}')
        return cls(obj["chars"], name=obj.get("name", "char"))


# ----------------------------------------------------------------------------------------------------------------------
# Byte-level BPE: training, saving, loading

BPE_FORMAT = "llmlab-bpe"
BPE_RANKS_FILE = "bpe.tiktoken"
BPE_META_FILE = "bpe.json"


class BPETokenizer(TiktokenTokenizer):
    """A byte-level BPE trained by train_bpe: ids 0..255 are the bytes in byte order, id 256 + k is merge k, and the
    special tokens follow the merges. tiktoken runs it; `merges()` are the merges made in training."""

    kind = "bpe"

    def __init__(self, *, name: str, pattern: str, pat_str: str | None = None, merges: Sequence[tuple[int, int]],
                 merge_counts: Sequence[int], special_tokens: Sequence[str] = (ENDOFTEXT,),
                 vocab_size: int | None = None):
        if pat_str is None:
            pat_str = _pattern_str(pattern)
        if len(merge_counts) != len(merges):
            raise TokenizerDataError(f"{len(merges)} merges but {len(merge_counts)} merge counts")
        vocab = [bytes([b]) for b in range(256)]
        for k, (left, right) in enumerate(merges):
            if not (0 <= left < len(vocab) and 0 <= right < len(vocab)):
                raise TokenizerDataError(f"merge {k} ({left}, {right}) uses an id not made before it")
            vocab.append(vocab[left] + vocab[right])
        ranks = {token: i for i, token in enumerate(vocab)}
        if len(ranks) != len(vocab):
            raise TokenizerDataError("two merges make the same bytes; tiktoken cannot run such a vocabulary")
        specials = {s: len(vocab) + i for i, s in enumerate(special_tokens)}
        super().__init__(name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials,
                         explicit_n_vocab=len(vocab) + len(specials))
        self.pattern = pattern
        self.merge_pairs = [(int(a), int(b)) for a, b in merges]
        self.merge_counts = [int(c) for c in merge_counts]
        self.vocab_size = vocab_size if vocab_size is not None else self.n_vocab  # as requested in training

    @functools.cached_property
    def _merges(self) -> list[Merge]:
        return [Merge(256 + k, a, b, self.token_bytes(a) + self.token_bytes(b))
                for k, (a, b) in enumerate(self.merge_pairs)]

    def describe(self) -> dict:
        return {**super().describe(), "pattern": self.pattern, "vocab_size": self.vocab_size}

    def save(self, directory: str | Path) -> Path:
        return save_bpe(self, directory)


def _pattern_str(pattern: str) -> str:
    try:
        return PATTERNS[pattern]
    except KeyError:
        raise TokenizerError(f"unknown split pattern {pattern!r}: choose one of {', '.join(PATTERNS)}") from None


def _check_vocab_size(vocab_size, n_special: int) -> None:
    low = MIN_VOCAB_SIZE + n_special
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TokenizerError(f"vocab_size must be an integer, got {vocab_size!r}")
    if not low <= vocab_size <= MAX_VOCAB_SIZE:
        raise TokenizerError(
            f"vocab_size ({vocab_size}) must be between {low} (256 bytes + {n_special} special token(s)) and "
            f"{MAX_VOCAB_SIZE} (ids must fit in uint16); try 512, 1024 or 4096")


def _merge_pair(word: list[int], a: int, b: int, new_id: int) -> tuple[list[int], list[int], list[int]]:
    """Replace each occurrence of (a, b) in word by new_id, left to right, without overlap (minbpe's merge).

    Returns (new word, positions of the merged pairs in the old word, positions of new_id in the new word)."""
    out: list[int] = []
    old_at: list[int] = []
    new_at: list[int] = []
    i, n = 0, len(word)
    while True:
        try:
            j = word.index(a, i)
        except ValueError:
            out.extend(word[i:])
            return out, old_at, new_at
        if j + 1 < n and word[j + 1] == b:
            out.extend(word[i:j])
            old_at.append(j)
            new_at.append(len(out))
            out.append(new_id)
            i = j + 2
        else:
            out.extend(word[i:j + 1])
            i = j + 1


def train_bpe(text: str, vocab_size: int, pattern: str = "gpt4", special_tokens: Sequence[str] = (ENDOFTEXT,), *,
              name: str = "bpe", on_progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> BPETokenizer:
    """Train a byte-level BPE on text, minbpe style, and return it runnable by tiktoken.

    vocab_size counts everything: 256 bytes + merges + special tokens (so 256 + len(special_tokens) .. 65536).
    pattern ("gpt4" or "gpt2") splits the text into chunks first, so merges never cross a chunk; special tokens in
    the text are cut out and never merged. Each step merges the most frequent neighbouring pair (ties: the smaller
    pair of ids) and records its count in merge_counts. If the text runs out of pairs first, training stops early
    and the tokenizer is smaller than asked (its vocab_size remembers the request).

    on_progress(done, total) is called after every merge (throttle it in the caller if it is expensive);
    should_stop() is polled before every merge, and True raises TokenizerTrainingCancelled.
    """
    special_tokens = list(special_tokens)
    if len(set(special_tokens)) != len(special_tokens) or not all(isinstance(s, str) and s for s in special_tokens):
        raise TokenizerError(f"special_tokens must be distinct non-empty strings, got {special_tokens!r}")
    _check_vocab_size(vocab_size, len(special_tokens))
    split = regex.compile(_pattern_str(pattern))
    total = vocab_size - 256 - len(special_tokens)

    # Count distinct chunks once; a chunk's pairs then count with its frequency.
    chunk_counts: Counter[str] = Counter()
    text = _valid_unicode(text)
    pieces = regex.split("|".join(regex.escape(s) for s in special_tokens), text) if special_tokens else [text]
    for piece in pieces:
        chunk_counts.update(split.findall(piece))
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())

    # pair -> weighted count, pair -> words that may contain it (stale entries are skipped when met)
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[wi]
            where[pair].add(wi)
    # Max-heap by count, smaller pair first on ties; an entry is stale when its count is no longer the pair's count.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    merge_counts: list[int] = []
    while len(merges) < total:
        if should_stop is not None and should_stop():
            raise TokenizerTrainingCancelled(f"BPE training stopped after {len(merges)} of {total} merges")
        while heap and pair_counts.get(heap[0][1]) != -heap[0][0]:
            heapq.heappop(heap)
        if not heap:
            break  # every chunk is a single token: nothing left to merge
        neg_count, pair = heapq.heappop(heap)
        new_id = 256 + len(merges)
        merges.append(pair)
        merge_counts.append(-neg_count)

        # Only the pairs touching a merged occurrence change; collect their count changes, then apply them.
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for wi in where.pop(pair):
            word = words[wi]
            new_word, old_at, new_at = _merge_pair(word, pair[0], pair[1], new_id)
            if not old_at:
                continue  # stale: an earlier merge took this occurrence
            f = freqs[wi]
            for j in {k for i in old_at for k in (i - 1, i, i + 1) if 0 <= k < len(word) - 1}:
                delta[word[j], word[j + 1]] -= f
            for j in {k for i in new_at for k in (i - 1, i) if 0 <= k < len(new_word) - 1}:
                p = (new_word[j], new_word[j + 1])
                delta[p] += f
                where[p].add(wi)
            words[wi] = new_word
        for p, d in delta.items():
            if d == 0:
                continue
            count = pair_counts[p] + d
            if count > 0:
                pair_counts[p] = count
                heapq.heappush(heap, (-count, p))
            else:
                del pair_counts[p]
        if pair in pair_counts:  # cannot happen: a left-to-right merge leaves no (a, b) behind
            raise RuntimeError(f"BPE trainer bug: pair {pair} survived its merge")
        if on_progress is not None:
            on_progress(len(merges), total)

    return BPETokenizer(name=name, pattern=pattern, merges=merges, merge_counts=merge_counts,
                        special_tokens=special_tokens, vocab_size=vocab_size)


def save_bpe(tokenizer: BPETokenizer, directory: str | Path) -> Path:
    """Write bpe.tiktoken (the ranks, in tiktoken's file format) and bpe.json (everything else) into directory."""
    meta = {
        "format": BPE_FORMAT, "version": 1, "kind": "bpe", "name": tokenizer.name,
        "pattern": tokenizer.pattern, "pat_str": tokenizer.pat_str,
        "special_tokens": tokenizer.special_tokens,  # text -> id
        "vocab_size": tokenizer.vocab_size, "n_vocab": tokenizer.n_vocab,
        "merges": [list(p) for p in tokenizer.merge_pairs],  # [left id, right id], merge k makes id 256 + k
        "merge_counts": tokenizer.merge_counts,  # how often the pair occurred in the training text when merged
    }
    return save_ranks_dir(directory, mergeable_ranks=tokenizer.mergeable_ranks, ranks_file=BPE_RANKS_FILE,
                          meta_file=BPE_META_FILE, meta=meta)


def load_bpe(directory: str | Path) -> BPETokenizer:
    """Load what save_bpe wrote, checking the ranks file against its recorded sha256 and the merges against it."""
    meta, ranks = load_ranks_dir(directory, meta_file=BPE_META_FILE, fmt=BPE_FORMAT, writer="save_bpe")
    specials = sorted(meta["special_tokens"].items(), key=lambda item: item[1])
    tokenizer = BPETokenizer(name=meta["name"], pattern=meta["pattern"], pat_str=meta["pat_str"],
                             merges=[tuple(p) for p in meta["merges"]], merge_counts=meta["merge_counts"],
                             special_tokens=[s for s, _ in specials], vocab_size=meta["vocab_size"])
    if tokenizer.mergeable_ranks != ranks or tokenizer.special_tokens != meta["special_tokens"]:
        raise TokenizerDataError(f"{directory}: the merges in {BPE_META_FILE} do not produce {meta['ranks_file']}")
    return tokenizer


# ----------------------------------------------------------------------------------------------------------------------
# Byte-level BPEs imported with a model (GPT-2's byte-to-unicode alphabet, as GGUF "gpt2" vocabularies and Hugging
# Face tokenizer.json files spell their tokens). workers/gpt/formats/ reads and writes those files; this is the
# tokenizer they produce, and its own directory format (tokenizer.tiktoken + tokenizer.json).

IMPORTED_FORMAT = "llmlab-bytelevel-bpe"
IMPORTED_RANKS_FILE = "tokenizer.tiktoken"
IMPORTED_META_FILE = "tokenizer.json"

# The pre-tokenization split of each known tokenizer, as one regex tiktoken can run.
GPT2_HF_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM's tokenizer.json splits in two steps: Digits(individual_digits) and then ByteLevel's GPT-2 regex inside each
# piece. As one regex: a digit stands alone, and whitespace right before a digit ends its piece the way the end of
# the text does (so "  1" splits as "  ", "1" and not " ", " ", "1").
SMOLLM_PAT = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
LLAMA3_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
              r"""\s*[\r\n]+|\s+(?!\S)|\s+""")

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters (openai/gpt-2 encoder.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def unicode_to_bytes(token: str) -> bytes:
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in token)
    except KeyError as e:
        raise TokenizerDataError(f"token {token!r} is not in the byte-level alphabet (character {e.args[0]!r}): "
                                 f"this is not a byte-level BPE vocabulary") from None


def bytes_to_token_str(data: bytes) -> str:
    return "".join(_BYTE_TO_CHAR[b] for b in data)


class ImportedTokenizer(TiktokenTokenizer):
    """A byte-level BPE brought in with a model (from GGUF metadata or a tokenizer.json), run by tiktoken.

    Ids are the model's: the rank of a token is its id, which for these vocabularies is also its merge order (checked
    on construction: tiktoken merges by rank, so a vocabulary whose ids are not in merge order would tokenize
    differently and is refused). Single bytes the vocabulary lacks get ranks from n_vocab up; encode() drops them,
    since the model has no embedding row for them.
    """

    kind = "imported"

    def __init__(self, *, name: str, pat_str: str, tokens: list[bytes | None], special_tokens: dict[str, int],
                 merges: list[tuple[bytes, bytes]] | None = None, chat_template: str | None = None,
                 bos_id: int | None = None, eos_id: int | None = None):
        n_vocab = len(tokens)
        ranks: dict[bytes, int] = {}
        for i, token in enumerate(tokens):
            if token is None:
                continue
            if token in ranks:
                raise TokenizerDataError(f"tokens {ranks[token]} and {i} are the same bytes {token!r}: tiktoken "
                                         f"cannot run a vocabulary with duplicates")
            ranks[token] = i
        missing = [bytes([b]) for b in range(256) if bytes([b]) not in ranks]
        for j, b in enumerate(missing):
            ranks[b] = n_vocab + j
        if merges is not None:
            _check_merge_order(ranks, merges)
        super().__init__(name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special_tokens)
        self.n_vocab = n_vocab  # the model's vocabulary; the missing bytes' ranks lie past it and are never returned
        self.missing_bytes = [b[0] for b in missing]
        self.chat_template = chat_template
        self.bos_id, self.eos_id = bos_id, eos_id

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        ids = super().encode(text, allow_special)
        if self.missing_bytes:
            ids = [i for i in ids if i < self.n_vocab]
        return ids

    def describe(self) -> dict:
        return {**super().describe(), "n_vocab": self.n_vocab, "missing_bytes": self.missing_bytes,
                "chat_template": self.chat_template, "bos_id": self.bos_id, "eos_id": self.eos_id}


def _check_merge_order(ranks: dict[bytes, int], merges: list[tuple[bytes, bytes]]) -> None:
    """tiktoken applies merges in rank order; the file's merges must make tokens in increasing id order."""
    last = -1
    for k, (a, b) in enumerate(merges):
        rank = ranks.get(a + b)
        if rank is None:
            raise TokenizerDataError(f"merge {k} ({a!r} + {b!r}) makes a token that is not in the vocabulary")
        if rank <= last:
            raise TokenizerDataError(f"merge {k} makes token {rank}, but an earlier merge made token {last}: this "
                                     f"vocabulary's ids are not in merge order, which tiktoken needs")
        last = rank


def save_imported(tokenizer: ImportedTokenizer, directory: str | Path) -> Path:
    """Write tokenizer.tiktoken (ranks, tiktoken's file format) and tokenizer.json (the rest) into directory."""
    meta = {
        "format": IMPORTED_FORMAT, "version": 1, "kind": tokenizer.kind, "name": tokenizer.name,
        "pat_str": tokenizer.pat_str, "special_tokens": tokenizer.special_tokens, "n_vocab": tokenizer.n_vocab,
        "chat_template": tokenizer.chat_template, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
    }
    return save_ranks_dir(directory, mergeable_ranks=tokenizer.mergeable_ranks, ranks_file=IMPORTED_RANKS_FILE,
                          meta_file=IMPORTED_META_FILE, meta=meta)


def load_imported(directory: str | Path) -> ImportedTokenizer:
    """Load what save_imported wrote, checking the ranks file against its recorded sha256."""
    meta, ranks = load_ranks_dir(directory, meta_file=IMPORTED_META_FILE, fmt=IMPORTED_FORMAT,
                                 writer="save_imported")
    n_vocab = meta["n_vocab"]
    tokens: list[bytes | None] = [None] * n_vocab
    for token, rank in ranks.items():
        if rank < n_vocab:
            tokens[rank] = token
    return ImportedTokenizer(name=meta["name"], pat_str=meta["pat_str"], tokens=tokens,
                             special_tokens=meta["special_tokens"], chat_template=meta["chat_template"],
                             bos_id=meta["bos_id"], eos_id=meta["eos_id"])


def tokenizer_from_vocab(*, name: str, pat_str: str, vocab: list[str], special: set[int],
                         merges: list[str] | list[list[str]] | None, chat_template: str | None = None,
                         bos_id: int | None = None, eos_id: int | None = None) -> ImportedTokenizer:
    """An ImportedTokenizer from a byte-level vocabulary: token strings by id (GPT-2's byte alphabet), the ids that
    are special (control) tokens, and the merges as "a b" strings or [a, b] pairs."""
    tokens: list[bytes | None] = []
    specials: dict[str, int] = {}
    for i, token in enumerate(vocab):
        if i in special:
            specials[token] = i
            tokens.append(None)
        else:
            tokens.append(unicode_to_bytes(token))
    pairs = None
    if merges is not None:
        pairs = []
        for m in merges:
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            pairs.append((unicode_to_bytes(a), unicode_to_bytes(b)))
    return ImportedTokenizer(name=name, pat_str=pat_str, tokens=tokens, special_tokens=specials, merges=pairs,
                             chat_template=chat_template, bos_id=bos_id, eos_id=eos_id)

