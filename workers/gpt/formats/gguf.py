"""GGUF files (llama.cpp) in: a Llama-family model's config, dequantized weights, tokenizer and chat template.

    imported = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", name="SmolLM2")   # any quantization `gguf` reads

llama.cpp's converter permutes the query and key rows for its RoPE kernels; read_gguf undoes it (_unpermute_rope).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tokenizers import GPT2_HF_PAT, LLAMA3_PAT, SMOLLM_PAT, ImportedTokenizer, tokenizer_from_vocab
from .imported import Imported, ImportRefused, check_state, make_config, tokenizer_refusals

# GGUF's tokenizer.ggml.pre names (llama.cpp's LLAMA_VOCAB_PRE_TYPE_*) that our split patterns reproduce
GGUF_PRE_PATTERNS = {"default": GPT2_HF_PAT, "gpt2": GPT2_HF_PAT, "smollm": SMOLLM_PAT, "llama-bpe": LLAMA3_PAT,
                     "llama3": LLAMA3_PAT}



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
    cfg = make_config(source, vocab_size=vocab_size, block_size=ctx, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
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

    with tokenizer_refusals():
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
