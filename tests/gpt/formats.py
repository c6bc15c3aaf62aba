"""Tiny random models written in outside formats, the way their own tools write them: a GGUF file as llama.cpp's
converter does (GGUFWriter, Q/K permuted for its RoPE kernels, a byte-level BPE vocabulary in the metadata), and
Hugging Face directories by transformers' save_pretrained. No downloads. Used by the importer and registry tests."""

from pathlib import Path

import numpy as np

SAMPLE_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish? 1234 5678 90\n"
    "The quick brown fox jumps over the lazy dog. It's 3.14159, isn't it?\n"
) * 3
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def hf_bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE trained by Hugging Face's tokenizers library on SAMPLE_TEXT (GPT-2's pre-tokenizer); the
    reference our ImportedTokenizer must match. Ids: the specials, the 256 bytes, then the merges in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([SAMPLE_TEXT], trainer)
    return tok


def random_llama_hf(*, vocab_size=320, n_embd=64, n_head=4, n_kv_head=2, n_layer=2, inter=96, ctx=64, theta=500.0,
                    tied=False, seed=0):
    """A random transformers LlamaForCausalLM (eval mode); its state dict is the reference for every Llama test."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=n_embd, intermediate_size=inter, num_hidden_layers=n_layer,
                      num_attention_heads=n_head, num_key_value_heads=n_kv_head, max_position_embeddings=ctx,
                      rms_norm_eps=1e-5, rope_theta=theta, tie_word_embeddings=tied, bos_token_id=None,
                      eos_token_id=2, pad_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms start at exactly 1: make them random so a swapped norm cannot hide
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return model


def write_gguf(path: Path, hf_model, tokenizer=None, **options) -> Path:
    """Write hf_model (LlamaForCausalLM) as llama.cpp's convert_hf_to_gguf.py would: GGUF names, Q and K permuted,
    weights in qtype ("F32", "F16" or "Q8_0"; norms stay F32), the tokenizer's vocabulary in the metadata."""
    c = hf_model.config
    rope = getattr(c, "rope_parameters", None) or {"rope_theta": c.rope_theta}
    dims = dict(n_layer=c.num_hidden_layers, ctx=c.max_position_embeddings, n_embd=c.hidden_size,
                inter=c.intermediate_size, n_head=c.num_attention_heads, n_kv_head=c.num_key_value_heads,
                theta=rope["rope_theta"], eps=c.rms_norm_eps, vocab_size=c.vocab_size, tied=c.tie_word_embeddings)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in hf_model.state_dict().items()}
    return _write_gguf(path, state, dims, tokenizer, **options)


def write_tiny_gguf(path: Path, *, n_layer=2, n_embd=32, n_head=4, n_kv_head=2, inter=64, ctx=64, seed=0,
                    tokenizer=None, **options) -> Path:
    """A random tiny Llama GGUF with a trained byte-level BPE and ChatML, numpy only (no transformers needed): the
    registry and inference tests import it like any user's file."""
    tokenizer = tokenizer or hf_bpe_tokenizer()
    V, C, hs = tokenizer.get_vocab_size(), n_embd, n_embd // n_head
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.2):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    state = {"model.embed_tokens.weight": w(V, C, scale=0.5), "model.norm.weight": 1 + w(C)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        state.update({p + "input_layernorm.weight": 1 + w(C), p + "post_attention_layernorm.weight": 1 + w(C),
                      p + "self_attn.q_proj.weight": w(n_head * hs, C), p + "self_attn.k_proj.weight": w(n_kv_head * hs, C),
                      p + "self_attn.v_proj.weight": w(n_kv_head * hs, C), p + "self_attn.o_proj.weight": w(C, C),
                      p + "mlp.gate_proj.weight": w(inter, C), p + "mlp.up_proj.weight": w(inter, C),
                      p + "mlp.down_proj.weight": w(C, inter)})
    dims = dict(n_layer=n_layer, ctx=ctx, n_embd=C, inter=inter, n_head=n_head, n_kv_head=n_kv_head, theta=10000.0,
                eps=1e-5, vocab_size=V, tied=True)
    return _write_gguf(path, state, dims, tokenizer, **options)


def _write_gguf(path: Path, state: dict, d: dict, tokenizer=None, *, qtype="F32", pre="gpt2", name="tiny-llama",
                chat_template=CHATML, drop_tensor: str | None = None, arch="llama") -> Path:
    import json

    import gguf

    from workers.gpt.formats.gguf import _permute_rope

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_block_count(d["n_layer"])
    w.add_context_length(d["ctx"])
    w.add_embedding_length(d["n_embd"])
    w.add_feed_forward_length(d["inter"])
    w.add_head_count(d["n_head"])
    w.add_head_count_kv(d["n_kv_head"])
    w.add_rope_freq_base(d["theta"])
    w.add_layer_norm_rms_eps(d["eps"])
    w.add_rope_dimension_count(d["n_embd"] // d["n_head"])
    if tokenizer is not None:
        vocab = tokenizer.get_vocab()
        tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
        assert len(tokens) == d["vocab_size"]
        merges = [" ".join(m) if isinstance(m, list) else m
                  for m in json.loads(tokenizer.to_str())["model"]["merges"]]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
        w.add_token_merges(merges)
        w.add_bos_token_id(vocab["<|im_start|>"])
        w.add_eos_token_id(vocab["<|im_end|>"])
        if chat_template:
            w.add_chat_template(chat_template)

    def add(name, arr, quantize=True):
        if name == drop_tensor:
            return
        if quantize and qtype != "F32" and arr.ndim == 2:
            t = getattr(gguf.GGMLQuantizationType, qtype)
            if qtype == "F16":
                w.add_tensor(name, arr.astype(np.float16))
            else:
                w.add_tensor(name, gguf.quants.quantize(arr, t), raw_dtype=t)
        else:
            w.add_tensor(name, arr)

    add("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(d["n_layer"]):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"], quantize=False)
        add(f"blk.{i}.attn_q.weight", _permute_rope(state[p + "self_attn.q_proj.weight"], d["n_head"]))
        add(f"blk.{i}.attn_k.weight", _permute_rope(state[p + "self_attn.k_proj.weight"], d["n_kv_head"]))
        add(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"], quantize=False)
        add(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
    add("output_norm.weight", state["model.norm.weight"], quantize=False)
    if not d["tied"]:
        add("output.weight", state["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def dequantized_reference(hf_model, qtype: str):
    """hf_model with its 2-D weights replaced by what qtype stores (quantize, then dequantize): the reference a
    quantized GGUF must match."""
    import gguf
    import torch

    if qtype == "F32":
        return hf_model
    t = getattr(gguf.GGMLQuantizationType, qtype)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if p.ndim == 2:
                arr = p.numpy().astype(np.float32)
                if qtype == "F16":
                    back = arr.astype(np.float16).astype(np.float32)
                else:
                    back = gguf.quants.dequantize(gguf.quants.quantize(arr, t), t)
                p.copy_(torch.from_numpy(np.ascontiguousarray(back)))
    return hf_model


def save_hf_dir(directory: Path, hf_model, tokenizer=None, chat_template=None) -> Path:
    """transformers' own save_pretrained (safetensors), plus tokenizer.json / tokenizer_config.json if given."""
    import json

    hf_model.save_pretrained(str(directory), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save(str(directory / "tokenizer.json"))
        tc = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "bos_token": "<|im_start|>"}
        if chat_template:
            tc["chat_template"] = chat_template
        (directory / "tokenizer_config.json").write_text(json.dumps(tc))
    return directory
