"""
Models from outside formats, and back out to one: GGUF files (llama.cpp), Hugging Face checkpoint directories
(GPT-2 and Llama), and export to the Hugging Face layout. numpy only: no torch, no Django.

    imported = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")     # a Llama-family GGUF, any quantization gguf reads
    imported = read_hf("path/to/dir")                            # config.json + model.safetensors (GPT-2 or Llama)
    path = write_checkpoint(imported, "artifacts/models/7")      # ckpt-000000.safetensors + .json + tokenizer/
    model = checkpoint.load_model(path)                          # ... which model.py runs (in the worker, with torch)
    export_hf(path, "out/")                                      # config.json + model.safetensors + tokenizer.json

Why numpy only: converting is reading, reshaping and writing arrays, which needs no autograd. Without torch the
`seed` command can import SmolLM2 at first start from the launcher process, and the tests check every result against
torch references (our GPT, and Hugging Face transformers where it is installed) instead of trusting it.

What bites, and where it is handled:
- llama.cpp's GGUF conversion permutes the rows of the query and key projections, per head, from Hugging Face's
  "rotate half" RoPE layout to the interleaved-pairs layout its kernels use (convert_hf_to_gguf.py, `permute`).
  model.py rotates halves, so read_gguf applies the inverse permutation (`_unpermute_rope`).
- A byte-level BPE vocabulary from GGUF or tokenizer.json may lack a few single bytes (SmolLM2's lacks 21: control
  characters and bytes that never start valid UTF-8). tiktoken needs a rank for every byte, so those bytes get ranks
  past the end of the model's vocabulary; ImportedTokenizer.encode drops the ids the model has no row for.
- Pickle is never loaded: only .gguf and .safetensors files are read, and a directory that holds only
  pytorch_model.bin (a pickle, which can run code when loaded) is refused with the reason.
- Every file is checked before anything is written: magic and header, every tensor present with the shape the
  config implies, finite values. A refusal raises ImportRefused with a message that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .fileio import atomic_write, atomic_write_bytes

from .config import ConfigError, GPTConfig, param_count
from .tokenizers import Tokenizer, TiktokenTokenizer, TokenizerDataError, dump_ranks, read_ranks_file, recover_merge

# The checkpoint format of checkpoint.py (which imports torch, so the names are repeated here; a test checks they
# agree and that load_checkpoint loads what write_checkpoint writes).
CHECKPOINT_FORMAT = "llmlab-gpt-checkpoint"
CHECKPOINT_VERSION = 1

TOKENIZER_FORMAT = "llmlab-bytelevel-bpe"
TOKENIZER_DIR = "tokenizer"  # next to an imported model's checkpoint
TOKENIZER_RANKS_FILE = "tokenizer.tiktoken"
TOKENIZER_META_FILE = "tokenizer.json"


class ImportRefused(ValueError):
    """A file cannot be imported; the message says why and, where there is one, what to do instead."""


# ----------------------------------------------------------------------------------------------------------------------
# Byte-level BPE tokenizers (GPT-2's byte-to-unicode alphabet, as GGUF "gpt2" vocabularies and tokenizer.json use)

# The pre-tokenization split of each known tokenizer, as one regex tiktoken can run.
GPT2_HF_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# SmolLM's tokenizer.json splits in two steps: Digits(individual_digits) and then ByteLevel's GPT-2 regex inside each
# piece. As one regex: a digit stands alone, and whitespace right before a digit ends its piece the way the end of
# the text does (so "  1" splits as "  ", "1" and not " ", " ", "1").
SMOLLM_PAT = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
LLAMA3_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
              r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
# GGUF's tokenizer.ggml.pre names (llama.cpp's LLAMA_VOCAB_PRE_TYPE_*) that these patterns reproduce
GGUF_PRE_PATTERNS = {"default": GPT2_HF_PAT, "gpt2": GPT2_HF_PAT, "smollm": SMOLLM_PAT, "llama-bpe": LLAMA3_PAT,
                     "llama3": LLAMA3_PAT}


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
        raise ImportRefused(f"token {token!r} is not in the byte-level alphabet (character {e.args[0]!r}): this is "
                            f"not a byte-level BPE vocabulary") from None


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
                raise ImportRefused(f"tokens {ranks[token]} and {i} are the same bytes {token!r}: tiktoken cannot run "
                                    f"a vocabulary with duplicates")
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
            raise ImportRefused(f"merge {k} ({a!r} + {b!r}) makes a token that is not in the vocabulary")
        if rank <= last:
            raise ImportRefused(f"merge {k} makes token {rank}, but an earlier merge made token {last}: this "
                                f"vocabulary's ids are not in merge order, which tiktoken needs")
        last = rank


def save_tokenizer(tokenizer: ImportedTokenizer, directory: str | Path) -> Path:
    """Write tokenizer.tiktoken (ranks, tiktoken's file format) and tokenizer.json (the rest) into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ranks_bytes = dump_ranks(tokenizer.mergeable_ranks)
    meta = {
        "format": TOKENIZER_FORMAT, "version": 1, "kind": tokenizer.kind, "name": tokenizer.name,
        "pat_str": tokenizer.pat_str, "special_tokens": tokenizer.special_tokens, "n_vocab": tokenizer.n_vocab,
        "ranks_file": TOKENIZER_RANKS_FILE, "ranks_sha256": hashlib.sha256(ranks_bytes).hexdigest(),
        "chat_template": tokenizer.chat_template, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
    }
    atomic_write_bytes(directory / TOKENIZER_RANKS_FILE, ranks_bytes)
    atomic_write_bytes(directory / TOKENIZER_META_FILE, (json.dumps(meta, ensure_ascii=False, indent=1) + "\n").encode())
    return directory


def load_tokenizer(directory: str | Path) -> ImportedTokenizer:
    """Load what save_tokenizer wrote, checking the ranks file against its recorded sha256."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / TOKENIZER_META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerDataError(f"{directory / TOKENIZER_META_FILE} is missing: is {directory} a tokenizer "
                                 f"directory written by save_tokenizer?") from None
    if meta.get("format") != TOKENIZER_FORMAT or meta.get("version") != 1:
        raise TokenizerDataError(f"{directory / TOKENIZER_META_FILE} is not a {TOKENIZER_FORMAT} version 1 file")
    ranks, _ = read_ranks_file(directory / meta["ranks_file"], meta["ranks_sha256"])
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


# ----------------------------------------------------------------------------------------------------------------------
# What an import produces


@dataclass
class Imported:
    """A model read from an outside format, in our names and layout (model.py), ready for write_checkpoint."""
    config: GPTConfig
    state: dict[str, np.ndarray]  # our parameter names -> float32 arrays; a tied lm_head is not listed
    tokenizer: ImportedTokenizer | None
    source: dict = field(default_factory=dict)  # format, file name, architecture, name from the file's metadata...
    notes: list[str] = field(default_factory=list)  # things a user should know (approximations, dropped pieces)
    builtin_tokenizer: str | None = None  # a built-in encoding (tokenizers.BUILTIN_NAMES) when no tokenizer came along

    @property
    def chat_template(self) -> str | None:
        return self.tokenizer.chat_template if self.tokenizer is not None else None

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a generation: the end-of-sequence token and, where present, <|endoftext|>."""
        ids = []
        if self.builtin_tokenizer is not None:
            from .tokenizers import ENDOFTEXT, describe as describe_builtin

            ids.append(describe_builtin(self.builtin_tokenizer)["special_tokens"][ENDOFTEXT])
        if self.tokenizer is not None:
            if self.tokenizer.eos_id is not None:
                ids.append(self.tokenizer.eos_id)
            eot = self.tokenizer.special_tokens.get("<|endoftext|>")
            if eot is not None and eot not in ids:
                ids.append(eot)
        return ids


def expected_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter GPT(cfg) has, by our name, with its shape (lm_head only when untied)."""
    C, V, I, hs = cfg.n_embd, cfg.vocab_size, cfg.intermediate_size, cfg.head_size
    qkv = (cfg.n_head + 2 * cfg.n_kv_head) * hs
    shapes = {"transformer.wte.weight": (V, C), "transformer.ln_f.weight": (C,)}
    if cfg.pos == "learned":
        shapes["transformer.wpe.weight"] = (cfg.block_size, C)
    layernorm_bias = cfg.norm == "layernorm" and cfg.bias
    if layernorm_bias:
        shapes["transformer.ln_f.bias"] = (C,)
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        linears = {"attn.c_attn": (qkv, C), "attn.c_proj": (C, C), "mlp.c_fc": (I, C), "mlp.c_proj": (C, I)}
        if cfg.mlp == "swiglu":
            linears["mlp.c_gate"] = (I, C)
        for name, shape in linears.items():
            shapes[p + name + ".weight"] = shape
            if cfg.bias:
                shapes[p + name + ".bias"] = (shape[0],)
        for norm in ("ln_1", "ln_2"):
            shapes[p + norm + ".weight"] = (C,)
            if layernorm_bias:
                shapes[p + norm + ".bias"] = (C,)
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def check_state(cfg: GPTConfig, state: dict[str, np.ndarray], *, source: str) -> None:
    """Refuse a state dict that does not fit cfg exactly: a missing, extra or misshapen tensor, or a NaN/inf."""
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in state]
    if missing:
        raise ImportRefused(f"{source}: {len(missing)} tensor(s) missing, e.g. {missing[0]} (is the file "
                            f"truncated, or not the model its config describes?)")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ImportRefused(f"{source}: unexpected tensor {extra[0]} for this configuration")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise ImportRefused(f"{source}: {name} has shape {tuple(state[name].shape)}, the config needs {shape}")
        if not np.isfinite(state[name]).all():
            raise ImportRefused(f"{source}: {name} holds NaN or infinite values: the file is corrupt")


def _config(source: str, **kwargs) -> GPTConfig:
    try:
        return GPTConfig(**kwargs)
    except ConfigError as e:
        raise ImportRefused(f"{source}: the model's configuration does not fit LLM Lab's GPT: {e}") from None


# ----------------------------------------------------------------------------------------------------------------------
# GGUF


def _unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K permutation: its converter does, per head, reshape(n_head, 2, hs/2, C).swapaxes(1, 2),
    turning HF's rotate-half row order into interleaved pairs. The inverse swaps the same axes back."""
    rows, cols = w.shape
    hs = rows // n_head
    return w.reshape(n_head, hs // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)  # (n_head*hs, C)


def _permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's permutation (convert_hf_to_gguf.py LlamaModel.permute), used by the tests to write GGUF files."""
    rows, cols = w.shape
    hs = rows // n_head
    return w.reshape(n_head, 2, hs // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def read_gguf(path: str | Path, *, name: str | None = None) -> Imported:
    """Read a Llama-family GGUF file: config from its metadata, dequantized weights, tokenizer, chat template."""
    path = Path(path)
    source = path.name
    try:
        import gguf
    except ImportError:  # pragma: no cover - it is a dependency
        raise ImportRefused("the gguf package is not installed: pip install gguf") from None
    if not path.is_file():
        raise ImportRefused(f"{path} does not exist or is not a file")
    if path.suffix.lower() != ".gguf":
        raise ImportRefused(f"{source} is not a .gguf file")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:  # a bad magic, a truncated header or tensor table: whatever numpy/struct raise
        raise ImportRefused(f"{source} is not a readable GGUF file: {type(e).__name__}: {e}") from None

    def meta(key, default=None):
        f = reader.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception as e:
            raise ImportRefused(f"{source}: metadata {key} cannot be read ({e}): the file is corrupt") from None

    arch = meta("general.architecture")
    if arch != "llama":
        raise ImportRefused(f"{source} is a {arch!r} model; LLM Lab imports Llama-family GGUF files (architecture "
                            f"'llama', e.g. SmolLM2, TinyLlama, Llama 2/3 without rope scaling)")
    try:
        n_layer = int(meta("llama.block_count"))
        n_embd = int(meta("llama.embedding_length"))
        n_head = int(meta("llama.attention.head_count"))
        n_kv_head = int(meta("llama.attention.head_count_kv", n_head))
        ffn = int(meta("llama.feed_forward_length"))
        ctx = int(meta("llama.context_length"))
    except (TypeError, ValueError):
        raise ImportRefused(f"{source}: the llama.* metadata (block_count, embedding_length, head_count, "
                            f"feed_forward_length, context_length) is incomplete") from None
    theta = float(meta("llama.rope.freq_base", 10000.0))
    eps = float(meta("llama.attention.layer_norm_rms_epsilon", 1e-5))
    hs = n_embd // n_head if n_head else 0
    rope_dim = meta("llama.rope.dimension_count", hs)
    if rope_dim != hs:
        raise ImportRefused(f"{source}: rotary embeddings over {rope_dim} of {hs} head dimensions are not supported")
    scaling = meta("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ImportRefused(f"{source}: RoPE scaling {scaling!r} is not supported by LLM Lab's model")
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise ImportRefused(f"{source}: rope frequency factors (Llama 3.1-style rope scaling) are not supported")

    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise ImportRefused(f"{source}: tensor token_embd.weight is missing: the file is truncated or not a model")
    vocab_size = int(embd.shape[-1])  # GGUF lists dimensions innermost first: (n_embd, n_vocab)
    cfg = _config(source, vocab_size=vocab_size, block_size=ctx, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                  bias=False, norm="rmsnorm", pos="rope", mlp="swiglu", n_kv_head=n_kv_head,
                  rope_theta=theta, norm_eps=float(f"{eps:.6g}"), intermediate_size=ffn,
                  tie_embeddings="output.weight" not in names)

    ours = {"token_embd.weight": "transformer.wte.weight", "output_norm.weight": "transformer.ln_f.weight",
            "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "ln_1", "ffn_norm": "ln_2", "attn_output": "attn.c_proj", "ffn_gate": "mlp.c_gate",
                 "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
    state: dict[str, np.ndarray] = {}
    qkv: dict[int, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        try:
            w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        except Exception as e:
            raise ImportRefused(f"{source}: tensor {t.name} ({t.tensor_type.name}) cannot be read: "
                                f"{type(e).__name__}: {e}") from None
        shape = tuple(int(d) for d in reversed(t.shape))
        if w.shape != shape:
            raise ImportRefused(f"{source}: tensor {t.name} holds {w.size} values, its shape {shape} needs "
                                f"{int(np.prod(shape))}: the file is truncated or corrupt")
        if t.name in ours:
            state[ours[t.name]] = w
            continue
        parts = t.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[3] != "weight" or not parts[1].isdigit():
            raise ImportRefused(f"{source}: unexpected tensor {t.name} for a Llama model")
        layer, kind = int(parts[1]), parts[2]
        if kind in ("attn_q", "attn_k", "attn_v"):
            qkv.setdefault(layer, {})[kind] = w
        elif kind in per_layer:
            state[f"transformer.h.{layer}.{per_layer[kind]}.weight"] = w
        else:
            raise ImportRefused(f"{source}: unexpected tensor {t.name} for a Llama model")
    for layer, parts in sorted(qkv.items()):
        if set(parts) != {"attn_q", "attn_k", "attn_v"}:
            missing = sorted({"attn_q", "attn_k", "attn_v"} - set(parts))
            raise ImportRefused(f"{source}: tensor blk.{layer}.{missing[0]}.weight is missing")
        q = _unpermute_rope(parts["attn_q"], n_head)
        k = _unpermute_rope(parts["attn_k"], n_kv_head)
        state[f"transformer.h.{layer}.attn.c_attn.weight"] = np.concatenate([q, k, parts["attn_v"]], axis=0)
    check_state(cfg, state, source=source)

    tokenizer = _gguf_tokenizer(meta, source, name or meta("general.name") or path.stem, vocab_size)
    info = {"format": "gguf", "file": source, "architecture": arch, "name": meta("general.name"),
            "file_type": meta("general.file_type"), "size_label": meta("general.size_label"),
            "license": meta("general.license"), "quantization": sorted({t.tensor_type.name for t in reader.tensors})}
    return Imported(config=cfg, state=state, tokenizer=tokenizer, source=info)


def _gguf_tokenizer(meta, source: str, name: str, vocab_size: int) -> ImportedTokenizer | None:
    model = meta("tokenizer.ggml.model")
    if model is None:
        return None
    if model != "gpt2":
        raise ImportRefused(f"{source}: tokenizer type {model!r} is not supported; LLM Lab runs byte-level BPE "
                            f"tokenizers (tokenizer.ggml.model 'gpt2', as SmolLM2 and Llama 3 use), not "
                            f"SentencePiece ('llama')")
    pre = meta("tokenizer.ggml.pre", "default")
    if pre not in GGUF_PRE_PATTERNS:
        raise ImportRefused(f"{source}: pre-tokenizer {pre!r} is not known to LLM Lab (known: "
                            f"{', '.join(sorted(GGUF_PRE_PATTERNS))}); tokenizing with another split would be "
                            f"silently wrong")
    vocab = list(meta("tokenizer.ggml.tokens", []))
    types = list(meta("tokenizer.ggml.token_type", [1] * len(vocab)))
    if len(vocab) != vocab_size or len(types) != len(vocab):
        raise ImportRefused(f"{source}: the vocabulary lists {len(vocab)} tokens ({len(types)} types), the "
                            f"embedding has {vocab_size} rows")
    special = {i for i, t in enumerate(types) if t in (3, 4)}  # CONTROL, USER_DEFINED
    return tokenizer_from_vocab(
        name=name, pat_str=GGUF_PRE_PATTERNS[pre], vocab=vocab, special=special,
        merges=list(meta("tokenizer.ggml.merges", [])) or None, chat_template=meta("tokenizer.chat_template"),
        bos_id=_int_or_none(meta("tokenizer.ggml.bos_token_id")), eos_id=_int_or_none(meta("tokenizer.ggml.eos_token_id")),
    )


def _int_or_none(value):
    return int(value) if value is not None else None


# ----------------------------------------------------------------------------------------------------------------------
# safetensors, read and written with numpy (and bfloat16 by hand: numpy has no such dtype)

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file (with its __metadata__) and the offset its data starts at; refuses a
    file that is too short, not safetensors, or has a corrupt header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ImportRefused(f"{path.name} is too short to be a safetensors file")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= min(_MAX_HEADER, size - 8):
            raise ImportRefused(f"{path.name} is not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise ImportRefused(f"{path.name}: the safetensors header is not valid JSON: the file is corrupt") from None
    if not isinstance(header, dict):
        raise ImportRefused(f"{path.name}: the safetensors header is not a JSON object")
    return header, 8 + n


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """All tensors of a .safetensors file as float32 numpy arrays, and its metadata. Checks the header and that every
    tensor lies inside the file, so a truncated or corrupt file is refused with the reason."""
    path = Path(path)
    header, offset = read_safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    size = path.stat().st_size
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=offset) if size > offset else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ImportRefused(f"{path.name}: the header entry of {name} is malformed") from None
        if dtype not in _ST_DTYPES:
            raise ImportRefused(f"{path.name}: tensor {name} has dtype {dtype}; LLM Lab reads F32, F16, BF16 and F64")
        itemsize = np.dtype(_ST_DTYPES[dtype]).itemsize
        count = int(np.prod(shape)) if shape else 1
        if not 0 <= start <= end or end - start != count * itemsize:
            raise ImportRefused(f"{path.name}: tensor {name} has offsets {start}..{end} for {count} {dtype} values")
        if end > data.size:
            raise ImportRefused(f"{path.name} is truncated: tensor {name} ends at byte {end} of the data, the file "
                                f"holds {data.size}")
        raw = np.frombuffer(data[start:end], dtype=_ST_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)  # bfloat16 is the top half of a float32
        tensors[name] = raw.astype(np.float32)
    return tensors, metadata


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write float32 tensors as .safetensors, atomically (temporary name, fsync, rename)."""
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))



# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face checkpoint directories

PICKLE_FILES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt", "pytorch_model.bin.index.json")


def read_hf(directory: str | Path, *, name: str | None = None) -> Imported:
    """Read a Hugging Face GPT-2 or Llama checkpoint directory: config.json, model.safetensors (or shards with
    model.safetensors.index.json) and, if present, tokenizer.json (byte-level BPE)."""
    directory = Path(directory)
    source = directory.name
    if not directory.is_dir():
        raise ImportRefused(f"{directory} is not a directory: a Hugging Face checkpoint is a folder with config.json "
                            f"and model.safetensors")
    try:
        hf = json.loads((directory / "config.json").read_text())
    except FileNotFoundError:
        raise ImportRefused(f"{source}: config.json is missing") from None
    except ValueError as e:
        raise ImportRefused(f"{source}: config.json is not valid JSON ({e})") from None
    tensors = _read_hf_tensors(directory)
    model_type = hf.get("model_type")
    if model_type == "gpt2":
        cfg, state, notes = _from_hf_gpt2(hf, tensors, source)
    elif model_type == "llama":
        cfg, state, notes = _from_hf_llama(hf, tensors, source)
    else:
        raise ImportRefused(f"{source}: model_type {model_type!r} is not supported; LLM Lab imports 'gpt2' and "
                            f"'llama' checkpoints")
    check_state(cfg, state, source=source)
    tokenizer = _hf_tokenizer(directory, hf, name or directory.name, cfg.vocab_size, notes)
    info = {"format": "huggingface", "file": source, "architecture": model_type,
            "name": hf.get("_name_or_path") or directory.name}
    return Imported(config=cfg, state=state, tokenizer=tokenizer, source=info, notes=notes,
                    builtin_tokenizer="gpt2" if tokenizer is None else None)


def _read_hf_tensors(directory: Path) -> dict[str, np.ndarray]:
    index = directory / "model.safetensors.index.json"
    single = directory / "model.safetensors"
    if single.exists():
        files = [single]
    elif index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError):
            raise ImportRefused(f"{index.name} is malformed: it needs a weight_map") from None
        files = [directory / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.exists() or f.suffix != ".safetensors" or f.parent != directory:
                raise ImportRefused(f"{index.name} names {f.name}, which is missing or not a safetensors file")
    else:
        pickles = [p for p in PICKLE_FILES if (directory / p).exists()]
        if pickles:
            raise ImportRefused(f"{directory.name} holds only {pickles[0]}, a pickle file, which can run code when "
                                f"loaded; LLM Lab only loads safetensors. Convert it where you trust it, e.g. "
                                f"model.save_pretrained(dir, safe_serialization=True)")
        raise ImportRefused(f"{directory.name}: model.safetensors is missing")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(read_safetensors(f)[0])
    return tensors


def _take(tensors: dict[str, np.ndarray], key: str, source: str) -> np.ndarray:
    try:
        return tensors.pop(key)
    except KeyError:
        raise ImportRefused(f"{source}: tensor {key} is missing (is the file truncated?)") from None


def _from_hf_gpt2(hf: dict, tensors: dict, source: str):
    notes = []
    act = hf.get("activation_function", "gelu_new")
    if act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        notes.append(f"GPT-2's MLP uses the tanh approximation of GELU ({act}); LLM Lab's model uses exact GELU, "
                     f"as nanoGPT does, so logits differ slightly (about 1e-3)")
    elif act != "gelu":
        raise ImportRefused(f"{source}: activation_function {act!r} is not supported (gelu or gelu_new)")
    if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise ImportRefused(f"{source}: non-standard attention scaling is not supported")
    cfg = _config(source, vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", 1024),
                  n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], bias=True,
                  norm_eps=hf.get("layer_norm_epsilon", 1e-5), intermediate_size=hf.get("n_inner") or None,
                  tie_embeddings=hf.get("tie_word_embeddings", True))
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    tensors = {k: v for k, v in tensors.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    state = {"transformer.wte.weight": _take(tensors, "wte.weight", source),
             "transformer.wpe.weight": _take(tensors, "wpe.weight", source),
             "transformer.ln_f.weight": _take(tensors, "ln_f.weight", source),
             "transformer.ln_f.bias": _take(tensors, "ln_f.bias", source)}
    for i in range(cfg.n_layer):
        for name in ("ln_1", "ln_2"):
            for p in ("weight", "bias"):
                state[f"transformer.h.{i}.{name}.{p}"] = _take(tensors, f"h.{i}.{name}.{p}", source)
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            # GPT-2 stores these as Conv1D, weight (in, out): nn.Linear wants (out, in)
            state[f"transformer.h.{i}.{name}.weight"] = _take(tensors, f"h.{i}.{name}.weight", source).T.copy()
            state[f"transformer.h.{i}.{name}.bias"] = _take(tensors, f"h.{i}.{name}.bias", source)
    head = tensors.pop("lm_head.weight", None)
    if not cfg.tie_embeddings:
        if head is None:
            raise ImportRefused(f"{source}: tensor lm_head.weight is missing")
        state["lm_head.weight"] = head
    if tensors:
        raise ImportRefused(f"{source}: unexpected tensor {sorted(tensors)[0]} for a GPT-2 model")
    return cfg, state, notes


def _from_hf_llama(hf: dict, tensors: dict, source: str):
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ImportRefused(f"{source}: RoPE scaling {rope_type!r} is not supported by LLM Lab's model")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ImportRefused(f"{source}: Llama with biases (attention_bias/mlp_bias) is not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ImportRefused(f"{source}: hidden_act {hf.get('hidden_act')!r} is not supported (silu)")
    n_head = hf["num_attention_heads"]
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim != hf["hidden_size"] // n_head:
        raise ImportRefused(f"{source}: head_dim {head_dim} differs from hidden_size / num_attention_heads")
    cfg = _config(source, vocab_size=hf["vocab_size"], block_size=hf.get("max_position_embeddings", 2048),
                  n_layer=hf["num_hidden_layers"], n_head=n_head, n_embd=hf["hidden_size"], bias=False,
                  norm="rmsnorm", pos="rope", mlp="swiglu", n_kv_head=hf.get("num_key_value_heads") or n_head,
                  rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                  norm_eps=hf.get("rms_norm_eps", 1e-6), intermediate_size=hf["intermediate_size"],
                  tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    state = {"transformer.wte.weight": _take(tensors, "model.embed_tokens.weight", source),
             "transformer.ln_f.weight": _take(tensors, "model.norm.weight", source)}
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        q, k, v = (_take(tensors, f"{p}self_attn.{x}_proj.weight", source) for x in "qkv")
        ours = f"transformer.h.{i}."
        state[ours + "attn.c_attn.weight"] = np.concatenate([q, k, v], axis=0)
        state[ours + "attn.c_proj.weight"] = _take(tensors, p + "self_attn.o_proj.weight", source)
        state[ours + "mlp.c_gate.weight"] = _take(tensors, p + "mlp.gate_proj.weight", source)
        state[ours + "mlp.c_fc.weight"] = _take(tensors, p + "mlp.up_proj.weight", source)
        state[ours + "mlp.c_proj.weight"] = _take(tensors, p + "mlp.down_proj.weight", source)
        state[ours + "ln_1.weight"] = _take(tensors, p + "input_layernorm.weight", source)
        state[ours + "ln_2.weight"] = _take(tensors, p + "post_attention_layernorm.weight", source)
    head = tensors.pop("lm_head.weight", None)
    if not cfg.tie_embeddings:
        if head is None:
            raise ImportRefused(f"{source}: tensor lm_head.weight is missing")
        state["lm_head.weight"] = head
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    if tensors:
        raise ImportRefused(f"{source}: unexpected tensor {sorted(tensors)[0]} for a Llama model")
    return cfg, state, []


def _hf_tokenizer(directory: Path, hf: dict, name: str, vocab_size: int, notes: list[str]):
    path = directory / "tokenizer.json"
    if not path.exists():
        if hf.get("model_type") == "gpt2" and vocab_size in (50257, 50304):
            notes.append("no tokenizer.json: using LLM Lab's built-in GPT-2 encoding")
            return None  # the caller records the built-in "gpt2"
        raise ImportRefused(f"{directory.name}: tokenizer.json is missing; a model needs its tokenizer")
    try:
        tj = json.loads(path.read_text(encoding="utf-8"))
        model = tj["model"]
    except (ValueError, KeyError):
        raise ImportRefused(f"{directory.name}: tokenizer.json is malformed") from None
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ImportRefused(f"{directory.name}: tokenizer.json holds a {model.get('type')} tokenizer"
                            f"{' with byte fallback (SentencePiece style)' if model.get('byte_fallback') else ''}; "
                            f"LLM Lab runs byte-level BPE tokenizers")
    pat_str = _hf_pre_tokenizer_pattern(tj.get("pre_tokenizer"), directory.name)
    added = {t["id"]: t["content"] for t in tj.get("added_tokens", [])}
    size = max([*model["vocab"].values(), *added.keys()]) + 1
    if size > vocab_size:
        raise ImportRefused(f"{directory.name}: tokenizer.json has ids up to {size - 1}, the model only "
                            f"{vocab_size} embedding rows")
    vocab: list[str] = [""] * vocab_size
    present = [False] * vocab_size
    for token, i in model["vocab"].items():
        vocab[i], present[i] = token, True
    special = set()
    for i, content in added.items():
        vocab[i], present[i] = content, True
        special.add(i)
    # ids no token uses (a model padded its embedding to a round number) stay unused: mark them special-less holes
    holes = [i for i, p in enumerate(present) if not p]
    tokens_by_id: list[bytes | None] = []
    specials: dict[str, int] = {}
    for i, token in enumerate(vocab):
        if i in special:
            specials[token] = i
            tokens_by_id.append(None)
        elif not present[i]:
            tokens_by_id.append(None)
        else:
            tokens_by_id.append(unicode_to_bytes(token))
    if holes:
        notes.append(f"{len(holes)} embedding row(s) have no token (padding)")
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    config_path = directory / "tokenizer_config.json"
    tc = json.loads(config_path.read_text()) if config_path.exists() else {}
    template = tc.get("chat_template")
    if isinstance(template, list):  # several named templates: take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (directory / "chat_template.jinja").exists():
        template = (directory / "chat_template.jinja").read_text(encoding="utf-8")

    def token_id(key):
        value = tc.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return specials.get(value) if value is not None else None

    eos = token_id("eos_token")
    if eos is None and hf.get("eos_token_id") in specials.values():
        eos = hf["eos_token_id"]
    return ImportedTokenizer(name=name, pat_str=pat_str, tokens=tokens_by_id, special_tokens=specials,
                             merges=[(unicode_to_bytes(a), unicode_to_bytes(b)) for a, b in merges],
                             chat_template=template, bos_id=token_id("bos_token"), eos_id=eos)


def _hf_pre_tokenizer_pattern(pre: dict | None, source: str) -> str:
    """The regex a tokenizer.json pre_tokenizer splits with: ByteLevel alone (GPT-2's), Digits + ByteLevel
    (SmolLM's), or Split(regex, Isolated) + ByteLevel without its own regex (Llama 3's and ours)."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        return GPT2_HF_PAT
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
        return SMOLLM_PAT
    if (kinds == ["Split", "ByteLevel"] and "Regex" in steps[0].get("pattern", {})
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
            and not steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
        return steps[0]["pattern"]["Regex"]
    raise ImportRefused(f"{source}: tokenizer.json's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not "
                        f"one LLM Lab can reproduce exactly")


# ----------------------------------------------------------------------------------------------------------------------
# Our checkpoint format, written without torch


def write_checkpoint(imported: Imported, directory: str | Path, *, step: int = 0, tokenizer_spec=None,
                     extra: dict | None = None) -> Path:
    """Write the weights and sidecar in checkpoint.py's format (ckpt-NNNNNN.safetensors + .json) into directory,
    and the tokenizer (if the import brought one) into directory/tokenizer/. Returns the .safetensors path.

    tokenizer_spec is what the sidecar records as the tokenizer; by default {"kind": "imported", "dir": "tokenizer"}
    (relative to the checkpoint's directory) when the import brought a tokenizer, else None."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if imported.tokenizer is not None:
        save_tokenizer(imported.tokenizer, directory / TOKENIZER_DIR)
        if tokenizer_spec is None:
            tokenizer_spec = {"kind": "imported", "dir": TOKENIZER_DIR, "name": imported.tokenizer.name}
    elif tokenizer_spec is None:
        tokenizer_spec = imported.builtin_tokenizer
    path = directory / f"ckpt-{step:06d}.safetensors"
    tensors = {f"model.{k}": v for k, v in imported.state.items()}
    aliases = {"model.lm_head.weight": "model.transformer.wte.weight"} if imported.config.tie_embeddings else {}
    write_safetensors(path, tensors, metadata={"format": CHECKPOINT_FORMAT, "step": str(step)})
    meta = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step, "created_at": time.time(),
        "model_config": imported.config.to_dict(), "train_config": None, "tokenizer": tokenizer_spec,
        "losses": {}, "data_position": None, "rng_state": {}, "aliases": aliases, "optimizer": None,
        "extra": {"source": imported.source, "notes": imported.notes, "stop_ids": imported.stop_ids,
                  "chat_template": imported.chat_template, **(extra or {})},
    }
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())
    return path


def read_checkpoint(path: str | Path) -> tuple[GPTConfig, dict[str, np.ndarray], dict]:
    """Our checkpoint's config, model weights (float32, our names, tied lm_head left out) and sidecar, with numpy."""
    path = Path(path).with_suffix(".safetensors")
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
    except FileNotFoundError:
        raise ImportRefused(f"{path.with_suffix('.json').name} is missing: not a complete checkpoint") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ImportRefused(f"{path.name} is not an LLM Lab checkpoint")
    cfg = GPTConfig.from_dict(meta["model_config"])
    tensors, _ = read_safetensors(path)
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    return cfg, state, meta


# ----------------------------------------------------------------------------------------------------------------------
# Export to the Hugging Face layout


def hf_architecture(cfg: GPTConfig) -> str:
    """'gpt2' or 'llama': the Hugging Face architecture that runs this block style exactly; ImportRefused if none."""
    if cfg.norm == "layernorm" and cfg.pos == "learned" and cfg.mlp == "gelu" and cfg.n_kv_head == cfg.n_head:
        return "gpt2"
    if cfg.norm == "rmsnorm" and cfg.pos == "rope" and cfg.mlp == "swiglu" and not cfg.bias:
        return "llama"
    raise ImportRefused(f"no Hugging Face architecture runs this block style (norm={cfg.norm}, pos={cfg.pos}, "
                        f"mlp={cfg.mlp}, bias={cfg.bias}): GPT-2 needs layernorm+learned+gelu, Llama "
                        f"rmsnorm+rope+swiglu without bias")


def export_hf(checkpoint: str | Path, directory: str | Path, *, tokenizer: Tokenizer | None = None,
              chat_template: str | None = None, stop_ids: Iterable[int] = ()) -> Path:
    """Write a checkpoint as a Hugging Face directory: config.json, model.safetensors, and tokenizer.json (+
    tokenizer_config.json) when a byte-level tokenizer is given. transformers' from_pretrained loads it."""
    cfg, state, meta = read_checkpoint(checkpoint)
    arch = hf_architecture(cfg)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stop_ids = list(stop_ids)
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": "float32",
              "eos_token_id": stop_ids[0] if stop_ids else None}
    if arch == "gpt2":
        hf_cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": cfg.block_size,
                  "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                  "n_inner": cfg.intermediate_size, "activation_function": "gelu",
                  "layer_norm_epsilon": cfg.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                  **common}
        out = _to_hf_gpt2(cfg, state)
    else:
        hf_cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.n_embd,
                  "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.n_layer,
                  "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head,
                  "head_dim": cfg.head_size, "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps,
                  "rope_theta": cfg.rope_theta, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                  **common}
        out = _to_hf_llama(cfg, state)
    write_safetensors(directory / "model.safetensors", out, metadata={"format": "pt"})
    atomic_write_bytes(directory / "config.json", (json.dumps(hf_cfg, indent=2) + "\n").encode())
    if tokenizer is not None:
        write_tokenizer_json(tokenizer, directory, chat_template=chat_template, eos_id=common["eos_token_id"])
    return directory


def _to_hf_gpt2(cfg: GPTConfig, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    def get(name, shape):  # a model trained with bias=False has no biases: GPT-2's zero biases are the same thing
        return state[name] if name in state else np.zeros(shape, np.float32)

    C = cfg.n_embd
    out = {"transformer.wte.weight": state["transformer.wte.weight"],
           "transformer.wpe.weight": state["transformer.wpe.weight"],
           "transformer.ln_f.weight": state["transformer.ln_f.weight"],
           "transformer.ln_f.bias": get("transformer.ln_f.bias", (C,))}
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        for name in ("ln_1", "ln_2"):
            out[f"{p}{name}.weight"] = state[f"{p}{name}.weight"]
            out[f"{p}{name}.bias"] = get(f"{p}{name}.bias", (C,))
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            w = state[f"{p}{name}.weight"]
            out[f"{p}{name}.weight"] = w.T.copy()  # nn.Linear (out, in) -> Conv1D (in, out)
            out[f"{p}{name}.bias"] = get(f"{p}{name}.bias", (w.shape[0],))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out


def _to_hf_llama(cfg: GPTConfig, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    hs = cfg.head_size
    out = {"model.embed_tokens.weight": state["transformer.wte.weight"],
           "model.norm.weight": state["transformer.ln_f.weight"]}
    for i in range(cfg.n_layer):
        ours, p = f"transformer.h.{i}.", f"model.layers.{i}."
        q, k, v = np.split(state[ours + "attn.c_attn.weight"],
                           [cfg.n_head * hs, (cfg.n_head + cfg.n_kv_head) * hs], axis=0)
        out.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                    p + "self_attn.v_proj.weight": v,
                    p + "self_attn.o_proj.weight": state[ours + "attn.c_proj.weight"],
                    p + "mlp.gate_proj.weight": state[ours + "mlp.c_gate.weight"],
                    p + "mlp.up_proj.weight": state[ours + "mlp.c_fc.weight"],
                    p + "mlp.down_proj.weight": state[ours + "mlp.c_proj.weight"],
                    p + "input_layernorm.weight": state[ours + "ln_1.weight"],
                    p + "post_attention_layernorm.weight": state[ours + "ln_2.weight"]})
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out


def write_tokenizer_json(tokenizer: Tokenizer, directory: str | Path, *, chat_template: str | None = None,
                         eos_id: int | None = None) -> None:
    """Write a tiktoken-run byte-level BPE as Hugging Face tokenizer.json + tokenizer_config.json.

    The merges are recovered from the ranks (recover_merge), the split regex becomes a Split pre-tokenizer, and
    ignore_merges=True mirrors tiktoken taking a chunk that is itself a token whole; the tests check the Hugging Face
    tokenizers library then encodes exactly as we do."""
    if not isinstance(tokenizer, TiktokenTokenizer):
        raise ImportRefused(f"the {tokenizer.kind} tokenizer {tokenizer.name!r} has no Hugging Face tokenizer.json "
                            f"form; only byte-level BPE tokenizers export")
    directory = Path(directory)
    n_vocab = tokenizer.n_vocab
    vocab = {bytes_to_token_str(t): r for t, r in tokenizer.mergeable_ranks.items() if r < n_vocab}
    vocab.update(tokenizer.special_tokens)  # Hugging Face gives an added token not also in the vocab a new id
    merges = []
    for token, rank in sorted(tokenizer.mergeable_ranks.items(), key=lambda item: item[1]):
        if len(token) > 1 and rank < n_vocab:
            m = recover_merge(tokenizer.mergeable_ranks, token)
            merges.append([bytes_to_token_str(tokenizer.token_bytes(m.left)),
                           bytes_to_token_str(tokenizer.token_bytes(m.right))])
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for s, i in sorted(tokenizer.special_tokens.items(), key=lambda item: item[1])]
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tokenizer.pat_str}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }
    eos = next((s for s, i in tokenizer.special_tokens.items() if i == eos_id), None)
    tc = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000, "eos_token": eos,
          "clean_up_tokenization_spaces": False}
    if chat_template:
        tc["chat_template"] = chat_template
    atomic_write_bytes(directory / "tokenizer.json", json.dumps(tj, ensure_ascii=False).encode())
    atomic_write_bytes(directory / "tokenizer_config.json", (json.dumps(tc, indent=2) + "\n").encode())


# ----------------------------------------------------------------------------------------------------------------------
# helpers for callers


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe(imported: Imported) -> dict:
    """A summary for the registry: architecture, parameter count, source, notes."""
    cfg = imported.config
    return {"architecture": "llama" if cfg.pos == "rope" else "gpt2", "n_params": param_count(cfg),
            "source": imported.source, "notes": imported.notes, "chat_template": imported.chat_template,
            "stop_ids": imported.stop_ids}
