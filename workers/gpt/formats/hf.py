"""Hugging Face checkpoint directories, in and out: GPT-2 and Llama weights, config.json, tokenizer.json.

    imported = read_hf("path/to/dir")       # config.json + model.safetensors (or shards) + tokenizer.json
    export_hf("ckpt-000100.safetensors", "out/", tokenizer=tok)   # what transformers' from_pretrained loads

Only safetensors are read: a directory holding only pytorch_model.bin (a pickle, which can run code when loaded) is
refused with the reason. A tokenizer.json must be a byte-level BPE whose pre-tokenizer we reproduce exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..config import GPTConfig
from ..fileio import atomic_write_bytes
from ..tokenizers import (GPT2_HF_PAT, SMOLLM_PAT, ImportedTokenizer, TiktokenTokenizer, Tokenizer, bytes_to_token_str,
                          recover_merge, unicode_to_bytes)
from .imported import Imported, ImportRefused, check_state, make_config, tokenizer_refusals
from .llmlab import read_checkpoint
from .safetensors import read_safetensors, write_safetensors

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
    with tokenizer_refusals():
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
    cfg = make_config(source, vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", 1024),
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
    cfg = make_config(source, vocab_size=hf["vocab_size"], block_size=hf.get("max_position_embeddings", 2048),
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
              chat_template: str | None = None, stop_ids: Iterable[int] = (),
              on_progress: Callable[[float, str], None] | None = None) -> Path:
    """Write a checkpoint as a Hugging Face directory: config.json, model.safetensors, and tokenizer.json (+
    tokenizer_config.json) when a byte-level tokenizer is given. transformers' from_pretrained loads it.

    on_progress(fraction, phase) is called before each step (reading, writing the weights, the tokenizer) and may
    raise to stop; what was written into `directory` is then the caller's to remove."""
    progress = on_progress or (lambda fraction, phase: None)
    progress(0.0, "reading the weights")
    cfg, state, meta = read_checkpoint(checkpoint)
    arch = hf_architecture(cfg)
    progress(0.3, "converting to the Hugging Face names")
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
    progress(0.4, "writing model.safetensors")
    write_safetensors(directory / "model.safetensors", out, metadata={"format": "pt"})
    atomic_write_bytes(directory / "config.json", (json.dumps(hf_cfg, indent=2) + "\n").encode())
    if tokenizer is not None:
        progress(0.8, "writing tokenizer.json")
        write_tokenizer_json(tokenizer, directory, chat_template=chat_template, eos_id=common["eos_token_id"])
    progress(1.0, "written")
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
