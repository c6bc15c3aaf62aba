"""The file formats (workers/gpt/formats/) in and out, checked against references: transformers' own Llama and GPT-2 running the same weights, and
Hugging Face's tokenizers library running the same vocabulary. Every model here is tiny and random, written by the
format's own tools (tests/gpt/formats.py); nothing is downloaded."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.gpt import formats
from tests.smollm2 import smollm2_checkpoint, smollm2_gguf  # noqa: F401  (fixtures)
from workers.gpt import checkpoint
from workers.gpt import tokenizers as toklib
from workers.gpt.chat import ChatTemplateError, render_chat
from workers.gpt.config import GPTConfig
from workers.gpt.formats import ImportRefused, gguf, llmlab, safetensors
from workers.gpt.formats import hf as hf_format
from workers.gpt.model import GPT

transformers = pytest.importorskip("transformers", reason="transformers is the reference (pip install -e '.[dev]')")
IDS = torch.tensor([[5, 17, 200, 3, 99, 42, 7, 250, 11, 64, 1, 300]])


def our_logits(ckpt_path, ids=IDS):
    model = checkpoint.load_model(ckpt_path)
    with torch.no_grad():
        return model(ids)[0]


def ref_logits(hf_model, ids=IDS):
    with torch.no_grad():
        return hf_model(ids).logits


@pytest.fixture(scope="module")
def hf_tok():
    return formats.hf_bpe_tokenizer()


# ---------------------------------------------------------------------------------------------------------- GGUF


@pytest.mark.parametrize("qtype,tied", [("F32", False), ("F32", True), ("F16", False), ("Q8_0", True)])
def test_a_gguf_llama_gives_the_logits_of_transformers_llama(tmp_path, hf_tok, qtype, tied):
    hf = formats.random_llama_hf(tied=tied)
    path = formats.write_gguf(tmp_path / "tiny.gguf", hf, hf_tok, qtype=qtype)
    imported = gguf.read_gguf(path)
    assert imported.config.pos == "rope" and imported.config.n_kv_head == 2
    assert imported.config.tie_embeddings == tied and imported.config.rope_theta == 500.0
    ckpt = llmlab.write_checkpoint(imported, tmp_path / "model")
    reference = formats.dequantized_reference(hf, qtype)
    torch.testing.assert_close(our_logits(ckpt), ref_logits(reference), atol=2e-5, rtol=1e-4)


def test_without_undoing_llama_cpps_permutation_the_logits_would_differ(tmp_path, hf_tok, monkeypatch):
    """Guards the test above: it would catch a missing un-permutation of Q and K."""
    hf = formats.random_llama_hf()
    path = formats.write_gguf(tmp_path / "tiny.gguf", hf, hf_tok)
    monkeypatch.setattr(gguf, "_unpermute_rope", lambda w, n_head: w)
    ckpt = llmlab.write_checkpoint(gguf.read_gguf(path), tmp_path / "model")
    assert not torch.allclose(our_logits(ckpt), ref_logits(hf), atol=1e-3)


def test_the_gguf_tokenizer_encodes_like_hugging_face_tokenizers(tmp_path, hf_tok):
    path = formats.write_gguf(tmp_path / "tiny.gguf", formats.random_llama_hf(), hf_tok)
    tok = gguf.read_gguf(path).tokenizer
    for text in [formats.SAMPLE_TEXT, "Hello  world!\n\n  x 12  345 don't", "naïve café 你好 😀", "   "]:
        ids = tok.encode(text)
        assert ids == hf_tok.encode(text).ids
        assert tok.decode(ids) == text
    assert tok.encode("<|im_start|>user", allow_special=True)[0] == hf_tok.token_to_id("<|im_start|>")
    assert tok.eos_id == hf_tok.token_to_id("<|im_end|>") and tok.chat_template == formats.CHATML


def test_an_imported_tokenizer_saves_and_loads(tmp_path, hf_tok):
    tok = gguf.read_gguf(formats.write_gguf(tmp_path / "t.gguf", formats.random_llama_hf(), hf_tok)).tokenizer
    again = toklib.load_imported(toklib.save_imported(tok, tmp_path / "tok"))
    assert again.encode(formats.SAMPLE_TEXT) == tok.encode(formats.SAMPLE_TEXT)
    assert again.special_tokens == tok.special_tokens and again.chat_template == tok.chat_template
    (tmp_path / "tok" / toklib.IMPORTED_RANKS_FILE).write_bytes(b"SGk= 3\n")
    with pytest.raises(ValueError, match="corrupt"):
        toklib.load_imported(tmp_path / "tok")


def test_missing_single_bytes_get_ranks_and_are_dropped_from_encodings():
    # a vocabulary without byte 0x04 (as SmolLM2's lacks 21 bytes): tiktoken still needs a rank for it
    vocab = [toklib.bytes_to_token_str(bytes([b])) for b in range(256) if b != 4] + ["<|endoftext|>"]
    tok = toklib.tokenizer_from_vocab(name="t", pat_str=toklib.GPT2_HF_PAT, vocab=vocab, special={255},
                                         merges=[])
    assert tok.missing_bytes == [4]
    assert tok.n_vocab == 256
    ids = tok.encode("a\x04b")
    assert tok.decode(ids) == "ab" and all(i < tok.n_vocab for i in ids)


def test_a_vocabulary_not_in_merge_order_is_refused():
    vocab = [toklib.bytes_to_token_str(bytes([b])) for b in range(256)] + ["ab", "abc"]
    with pytest.raises(toklib.TokenizerDataError, match="merge order"):
        toklib.tokenizer_from_vocab(name="t", pat_str=toklib.GPT2_HF_PAT, vocab=vocab, special=set(),
                                       merges=["ab c", "a b"])


def test_the_smollm_split_matches_digits_then_byte_level(hf_tok):
    """SMOLLM_PAT in one regex equals Hugging Face's Digits(individual) + ByteLevel pre-tokenizers in sequence."""
    import regex
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    for text in ["  1  22   333\n 4", "x 1", "a1b 2c", "price: $12.50!", "tab\t9 \n\n 7", formats.SAMPLE_TEXT]:
        expected = [toklib.unicode_to_bytes(piece).decode() for piece, _ in pre.pre_tokenize_str(text)]
        assert regex.findall(toklib.SMOLLM_PAT, text) == expected


@pytest.mark.parametrize("damage,reason", [
    (lambda p: p.write_bytes(b"GGUF" + b"\x00" * 10), "not a readable GGUF"),
    (lambda p: p.write_bytes(b"not a gguf file at all" * 10), "not a readable GGUF"),
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated|not a readable|cannot be read"),
])
def test_a_corrupt_or_truncated_gguf_is_refused_with_the_reason(tmp_path, hf_tok, damage, reason):
    path = formats.write_gguf(tmp_path / "tiny.gguf", formats.random_llama_hf(), hf_tok)
    damage(path)
    with pytest.raises(ImportRefused, match=reason):
        gguf.read_gguf(path)


def test_a_gguf_missing_a_tensor_or_of_another_architecture_is_refused(tmp_path, hf_tok):
    hf = formats.random_llama_hf()
    with pytest.raises(ImportRefused, match="blk.1.attn_k.weight is missing"):
        gguf.read_gguf(formats.write_gguf(tmp_path / "a.gguf", hf, hf_tok, drop_tensor="blk.1.attn_k.weight"))
    with pytest.raises(ImportRefused, match="ffn_down.weight|missing"):
        gguf.read_gguf(formats.write_gguf(tmp_path / "b.gguf", hf, hf_tok, drop_tensor="blk.0.ffn_down.weight"))
    with pytest.raises(ImportRefused, match="'qwen2' model"):
        gguf.read_gguf(formats.write_gguf(tmp_path / "c.gguf", hf, hf_tok, arch="qwen2"))
    with pytest.raises(ImportRefused, match="pre-tokenizer 'mystery'"):
        gguf.read_gguf(formats.write_gguf(tmp_path / "d.gguf", hf, hf_tok, pre="mystery"))


def test_nan_weights_are_refused(tmp_path, hf_tok):
    hf = formats.random_llama_hf()
    with torch.no_grad():
        hf.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(ImportRefused, match="NaN"):
        gguf.read_gguf(formats.write_gguf(tmp_path / "n.gguf", hf, hf_tok))


# --------------------------------------------------------------------------------------------- Hugging Face dirs


@pytest.mark.parametrize("tied", [False, True])
def test_a_hugging_face_llama_directory_gives_transformers_logits(tmp_path, hf_tok, tied):
    hf = formats.random_llama_hf(tied=tied, n_kv_head=1)
    directory = formats.save_hf_dir(tmp_path / "llama", hf, hf_tok, chat_template=formats.CHATML)
    imported = hf_format.read_hf(directory)
    assert imported.config.n_kv_head == 1 and imported.tokenizer.chat_template == formats.CHATML
    assert imported.tokenizer.encode(formats.SAMPLE_TEXT) == hf_tok.encode(formats.SAMPLE_TEXT).ids
    assert imported.stop_ids == [hf_tok.token_to_id("<|im_end|>"), hf_tok.token_to_id("<|endoftext|>")]
    ckpt = llmlab.write_checkpoint(imported, tmp_path / "model")
    torch.testing.assert_close(our_logits(ckpt), ref_logits(hf), atol=2e-5, rtol=1e-4)


def _gpt2_hf(activation="gelu", tied=True):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                     activation_function=activation, tie_word_embeddings=tied)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


def test_a_hugging_face_gpt2_directory_gives_transformers_logits(tmp_path):
    hf = _gpt2_hf()
    imported = hf_format.read_hf(formats.save_hf_dir(tmp_path / "gpt2", hf))
    assert imported.builtin_tokenizer == "gpt2" and imported.stop_ids == [50256]
    ckpt = llmlab.write_checkpoint(imported, tmp_path / "model")
    assert json.loads(ckpt.with_suffix(".json").read_text())["tokenizer"] == "gpt2"
    torch.testing.assert_close(our_logits(ckpt), ref_logits(hf), atol=2e-5, rtol=1e-4)


def test_gpt2s_tanh_gelu_is_imported_with_a_note_and_close_logits(tmp_path):
    hf = _gpt2_hf("gelu_new")
    imported = hf_format.read_hf(formats.save_hf_dir(tmp_path / "gpt2", hf))
    assert "tanh approximation" in imported.notes[0]
    ckpt = llmlab.write_checkpoint(imported, tmp_path / "model")
    torch.testing.assert_close(our_logits(ckpt), ref_logits(hf), atol=5e-3, rtol=1e-2)


def test_a_pickle_only_directory_is_refused(tmp_path):
    directory = formats.save_hf_dir(tmp_path / "gpt2", _gpt2_hf())
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ImportRefused, match="pickle"):
        hf_format.read_hf(directory)


def test_a_truncated_safetensors_file_is_refused(tmp_path):
    directory = formats.save_hf_dir(tmp_path / "gpt2", _gpt2_hf())
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ImportRefused, match="truncated"):
        hf_format.read_hf(directory)
    (directory / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ImportRefused, match="not a safetensors file"):
        hf_format.read_hf(directory)


def test_bfloat16_safetensors_are_read_exactly(tmp_path):
    from safetensors.torch import save_file

    t = torch.randn(3, 5).to(torch.bfloat16)
    save_file({"x": t}, tmp_path / "b.safetensors")
    tensors, _ = safetensors.read_safetensors(tmp_path / "b.safetensors")
    np.testing.assert_array_equal(tensors["x"], t.float().numpy())


# --------------------------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_an_exported_model_runs_in_transformers_with_our_logits(tmp_path, style):
    torch.manual_seed(0)
    base = dict(vocab_size=96, block_size=32, n_layer=2, n_head=4, n_embd=32)
    if style == "llama":
        base.update(norm="rmsnorm", pos="rope", mlp="swiglu", n_kv_head=2, bias=False, tie_embeddings=False)
    model = GPT(GPTConfig(**base)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
    ckpt = checkpoint.save_checkpoint(tmp_path / "ckpt", model=model, step=7)
    out = hf_format.export_hf(ckpt, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = torch.tensor([[1, 2, 3, 50, 95, 7, 7, 0]])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[0], atol=2e-5, rtol=1e-4)


def test_a_block_style_no_hugging_face_architecture_runs_is_refused(tmp_path):
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16, pos="rope"))
    ckpt = checkpoint.save_checkpoint(tmp_path / "ckpt", model=model, step=1)
    with pytest.raises(ImportRefused, match="no Hugging Face architecture"):
        hf_format.export_hf(ckpt, tmp_path / "hf")


def test_exported_tokenizer_json_encodes_like_tiktoken(tmp_path, hf_tok):
    from tokenizers import Tokenizer

    from workers.gpt.tokenizers import get_builtin, train_bpe

    text = "Hello  world!\n\n  x 12  345 don't naïve café 你好 😀 " + formats.SAMPLE_TEXT
    imported_tok = gguf.read_gguf(
        formats.write_gguf(tmp_path / "t.gguf", formats.random_llama_hf(), hf_tok)).tokenizer
    for tok in [get_builtin("gpt2"), train_bpe(formats.SAMPLE_TEXT, 300, name="tiny"), imported_tok]:
        directory = tmp_path / tok.name
        directory.mkdir()
        hf_format.write_tokenizer_json(tok, directory)
        hf = Tokenizer.from_file(str(directory / "tokenizer.json"))
        assert hf.encode(text).ids == tok.encode(text), tok.name
        assert hf.decode(tok.encode(text)) == text


def test_checkpoints_written_without_torch_load_with_checkpoint_py(tmp_path, hf_tok):
    imported = gguf.read_gguf(formats.write_gguf(tmp_path / "t.gguf", formats.random_llama_hf(tied=True), hf_tok))
    path = llmlab.write_checkpoint(imported, tmp_path / "m", step=3)
    loaded = checkpoint.load_checkpoint(path, with_optimizer=False)
    assert loaded.step == 3 and loaded.tokenizer == {"kind": "imported", "dir": "tokenizer", "name": "tiny-llama"}
    assert loaded.extra["stop_ids"] == [hf_tok.token_to_id("<|im_end|>"), hf_tok.token_to_id("<|endoftext|>")]
    assert loaded.model_state["lm_head.weight"] is loaded.model_state["transformer.wte.weight"]


# ------------------------------------------------------------------------------------------------- chat templates


def test_chat_templates_render_as_transformers_renders_them(hf_tok):
    from transformers import PreTrainedTokenizerFast

    ref = PreTrainedTokenizerFast(tokenizer_object=hf_tok)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {{ there }}"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Why?"}]
    for template in [formats.CHATML, _SMOLLM2_TEMPLATE]:
        expected = ref.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
        assert render_chat(template, messages, add_generation_prompt=True) == expected


def test_a_template_cannot_reach_outside_its_sandbox():
    with pytest.raises(ChatTemplateError):
        render_chat("{{ messages.__class__.__mro__[1].__subclasses__() }}", [{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="refused"):
        render_chat("{{ raise_exception('no system role') }}", [{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="message 0"):
        render_chat(formats.CHATML, [{"role": "wizard", "content": "x"}])


_SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
    "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")


# --------------------------------------------------------------------------------------------- the real SmolLM2


@pytest.mark.smollm2
def test_smollm2_answers_the_capital_of_france_greedily(smollm2_checkpoint):
    from workers.gpt.generate import generate

    path, tok = smollm2_checkpoint
    model = checkpoint.load_model(path)
    prompt = render_chat(tok.chat_template, [{"role": "user", "content": "What is the capital of France?"}])
    ids = tok.encode(prompt, allow_special=True)
    out = [t.id for t in generate(model, ids, max_new_tokens=20, temperature=0, stop_ids=[tok.eos_id])]
    assert tok.decode(out) == "The capital of France is Paris.<|im_end|>"


@pytest.mark.smollm2
def test_smollm2s_tokenizer_encodes_like_hugging_face_tokenizers(smollm2_gguf):
    from gguf import GGUFReader
    from tokenizers import Tokenizer, models, pre_tokenizers

    reader = GGUFReader(str(smollm2_gguf))
    vocab = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ")) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    ref = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=merges))
    ref.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    meta = lambda key, default=None: reader.fields[key].contents() if key in reader.fields else default  # noqa: E731
    ours = gguf._gguf_tokenizer(meta, "smollm2", "SmolLM2", len(vocab))
    assert len(ours.missing_bytes) == 21
    shakespeare = (Path(__file__).parents[2] / "data" / "corpora" / "shakespeare.txt").read_text()
    for text in [shakespeare[:100_000], "Tab\there,  two  spaces 1234 5678  9 — naïve 你好 😀 \x04 <b>", "  1  22"]:
        assert ours.encode(text) == ref.encode(text).ids
