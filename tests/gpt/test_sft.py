"""sft.py and the rendering half of conversations.py: the assistant-only loss mask token by token, ChatML tokens
added with the embedding grown, padded batches with -1 targets, LoRA merged == unmerged, the fine-tune schedule."""

from pathlib import Path

import pytest
import torch

from tests.smollm2 import smollm2_checkpoint, smollm2_gguf  # noqa: F401  (fixtures)
from workers.gpt.config import GPTConfig
from workers.gpt.conversations import (CHATML_TEMPLATE, IM_END, IM_START, ChatMLTokenizer, chat_format,
                                       render_conversation, with_chatml)
from workers.gpt.model import GPT
from workers.gpt.sft import (ConversationBatches, apply_lora, finetune_train_config, grow_embeddings,
                             lora_target_names, merge_lora, trainable_parameters)
from workers.gpt.tokenizers import CharTokenizer, TokenizerError, get_builtin
from workers.gpt.train import get_lr

from .conftest import LLAMA, TINY

ROOT = Path(__file__).resolve().parents[2]
CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am LLM Lab's assistant."}, {"role": "user", "content": "Two plus two?"},
        {"role": "assistant", "content": "Four."}]


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.from_text((ROOT / "data/corpora/shakespeare.txt").read_text(encoding="utf-8"))


def chatml_pieces(tok, conv):
    """The expected ids and mask of conv under ChatML, built by hand piece by piece: template text masked,
    assistant content and its <|im_end|> trained, the newline after <|im_end|> masked."""
    pieces = []
    for m in conv:
        trained = m["role"] == "assistant"
        pieces += [(IM_START, 0, True), (m["role"] + "\n", 0, False), (m["content"], int(trained), False),
                   (IM_END, int(trained), True), ("\n", 0, False)]
    ids, mask = [], []
    for text, label, special in pieces:
        piece_ids = [tok.special_tokens[text]] if special else tok.encode(text)
        ids += piece_ids
        mask += [label] * len(piece_ids)
    return ids, mask


def test_chatml_mask_is_exactly_the_assistant_content_and_its_end_of_turn(char_tok):
    tok, template, eot = chat_format(char_tok, None)
    assert template == CHATML_TEMPLATE and eot == IM_END
    r = render_conversation(CONV, tok, template, eot)
    expected_ids, expected_mask = chatml_pieces(tok, CONV)
    assert r.ids == expected_ids
    assert r.mask == expected_mask
    assert r.aligned
    trained = tok.decode([i for i, m in zip(r.ids, r.mask) if m])
    assert trained == "I am LLM Lab's assistant.<|im_end|>Four.<|im_end|>"


def test_chatml_mask_with_a_bpe_tokenizer_is_the_concatenation_of_its_pieces():
    tok, template, eot = chat_format(get_builtin("gpt2"), None)
    r = render_conversation(CONV, tok, template, eot)
    expected_ids, expected_mask = chatml_pieces(tok, CONV)
    assert r.aligned and r.ids == expected_ids and r.mask == expected_mask  # whole tokenization == the pieces'


def test_chatml_tokens_are_added_after_the_base_vocabulary(char_tok):
    tok = with_chatml(char_tok)
    assert isinstance(tok, ChatMLTokenizer)
    assert tok.special_tokens == {IM_START: char_tok.n_vocab, IM_END: char_tok.n_vocab + 1}
    assert tok.n_vocab == char_tok.n_vocab + 2
    ids = tok.encode("<|im_start|>user\nHi<|im_end|>", allow_special=True)
    assert ids[0] == char_tok.n_vocab and ids[-1] == char_tok.n_vocab + 1
    assert ids[1:-1] == char_tok.encode("user\nHi")
    assert tok.decode(ids) == "<|im_start|>user\nHi<|im_end|>"
    assert with_chatml(tok) is tok  # already has both markers: nothing added twice


def test_a_tokenizer_that_cannot_encode_the_conversation_is_named(char_tok):
    tok, template, eot = chat_format(char_tok, None)
    conv = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]
    with pytest.raises(ValueError, match="train conversation 0: .*not in the vocabulary"):
        ConversationBatches.build(train=[conv], tokenizer=tok, template=template, end_of_turn=eot, block_size=64,
                                  batch_size=2)
    with pytest.raises(TokenizerError):
        render_conversation(conv, tok, template, eot)


@pytest.mark.parametrize("style", ["tied", "untied"])
def test_growing_the_embedding_keeps_old_rows_and_starts_new_ones_at_the_mean(style, char_tok):
    cfg = GPTConfig(**{**TINY, "vocab_size": char_tok.n_vocab, **({} if style == "tied" else LLAMA)})
    model = GPT(cfg)
    old_wte = model.transformer.wte.weight.detach().clone()
    old_head = model.lm_head.weight.detach().clone()
    tok = with_chatml(char_tok)
    assert grow_embeddings(model, tok) == [char_tok.n_vocab, char_tok.n_vocab + 1]
    wte, head = model.transformer.wte.weight, model.lm_head.weight
    assert model.config.vocab_size == wte.size(0) == head.size(0) == char_tok.n_vocab + 2
    assert torch.equal(wte[:char_tok.n_vocab], old_wte) and torch.equal(head[:char_tok.n_vocab], old_head)
    for i in tok.added.values():
        assert torch.allclose(wte[i], old_wte.mean(dim=0)) and torch.allclose(head[i], old_head.mean(dim=0))
    assert (head is wte) == (style == "tied")
    logits, _ = model(torch.tensor([[tok.added[IM_START], 3, tok.added[IM_END]]]))
    assert logits.shape == (1, 3, char_tok.n_vocab + 2)


def test_added_ids_inside_padding_rows_are_reset_without_growing():
    base = CharTokenizer.from_text("abcdefghij")  # 10 ids; the model has 64 rows, like GPT-2's padding to 50304
    model = GPT(GPTConfig(**TINY))
    old = model.transformer.wte.weight.detach().clone()
    tok = with_chatml(base)
    assert grow_embeddings(model, tok) == [10, 11]
    wte = model.transformer.wte.weight
    assert wte.shape == old.shape and model.config.vocab_size == 64
    assert torch.equal(wte[:10], old[:10]) and torch.equal(wte[12:], old[12:])
    assert torch.allclose(wte[10], old[:10].mean(dim=0))


def batches_for(convs, tok, block_size=64, batch_size=4):
    tok, template, eot = chat_format(tok, None)
    return tok, ConversationBatches.build(train=convs, val=convs, tokenizer=tok, template=template, end_of_turn=eot,
                                          block_size=block_size, batch_size=batch_size)


def test_batches_target_only_assistant_tokens_and_pad_with_minus_one(char_tok):
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    tok, batches = batches_for([CONV, short], char_tok, block_size=128)
    x, y = batches.collate(batches.rows["train"])
    assert x.shape == y.shape and x.size(1) % 8 == 0
    for b, r in enumerate(batches.rows["train"]):
        n = len(r.ids) - 1
        assert x[b, :n].tolist() == r.ids[:-1]
        expected = [t if m else -1 for t, m in zip(r.ids[1:], r.mask[1:])]
        assert y[b, :n].tolist() == expected
        assert (y[b, n:] == -1).all()  # padding is never a target
    assert tok.decode([t for t in y[1].tolist() if t != -1]) == "Hello.<|im_end|>"
    assert batches.report()["train"]["cropped"] == 0
    gen = torch.Generator().manual_seed(0)
    x, y = batches("val", gen)
    assert x.shape[0] == 4 and y.dtype == torch.long


def test_too_long_conversations_are_cropped_from_the_left_keeping_the_end_of_turn(char_tok):
    tok, batches = batches_for([CONV, CONV[1:3]], char_tok, block_size=40)
    assert batches.n_cropped == {"train": 2, "val": 2}
    for r in batches.rows["train"]:
        assert len(r.ids) == 41
        assert r.ids[-2] == tok.added[IM_END] and r.mask[-2] == 1  # the final answer still ends its turn
    x, y = batches.collate(batches.rows["train"])
    assert x.shape == (2, 40)


def test_a_context_too_short_for_any_answer_is_refused(char_tok):
    with pytest.raises(ValueError, match="no train conversation has an assistant token to train on within block_size"):
        batches_for([CONV], char_tok, block_size=1)


def test_a_conversation_without_an_assistant_turn_is_refused(char_tok):
    with pytest.raises(ValueError, match="train conversation 1 has no assistant message"):
        batches_for([CONV, [{"role": "user", "content": "Hi"}]], char_tok)


def test_training_on_the_batches_lowers_the_loss_and_only_unmasked_positions_count(char_tok):
    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
             for q, a in [("Who are you?", "LLM Lab's assistant."), ("Hi", "Hello."), ("Bye", "Farewell.")]]
    tok, batches = batches_for(convs, char_tok, block_size=64, batch_size=3)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "block_size": 64, "vocab_size": char_tok.n_vocab}))
    grow_embeddings(model, tok)
    x, y = batches.collate(batches.rows["train"])

    logits, loss = model(x, y)
    keep = y != -1
    manual = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(loss, manual)
    logits.retain_grad()
    loss.backward()
    assert (logits.grad[~keep] == 0).all() and (logits.grad[keep] != 0).any()  # masked positions get no gradient

    cfg = finetune_train_config(max_steps=100, learning_rate=1e-2)
    opt = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), "cpu")
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(1, cfg.max_steps + 1):
        for group in opt.param_groups:
            group["lr"] = get_lr(step, cfg)
        xb, yb = batches("train", gen)
        _, loss = model(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.25 * losses[0], (losses[0], losses[-5:])


def test_finetune_schedule_warms_up_briefly_and_decays_to_zero():
    cfg = finetune_train_config(max_steps=200)
    assert cfg.warmup_steps == 10 and cfg.lr_decay_steps == 200 and cfg.min_lr == 0.0
    assert get_lr(1, cfg) == pytest.approx(cfg.learning_rate / 10)
    assert get_lr(10, cfg) == pytest.approx(cfg.learning_rate)
    assert get_lr(200, cfg) == pytest.approx(0.0, abs=1e-12)
    lrs = [get_lr(s, cfg) for s in range(10, 201)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    lora = finetune_train_config(max_steps=10, lora=True)
    assert lora.learning_rate > cfg.learning_rate and lora.weight_decay == 0.0 and lora.warmup_steps == 1


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_lora_merged_logits_equal_the_adapted_model(style):
    cfg = GPTConfig(**{**TINY, **({} if style == "gpt2" else LLAMA)})
    torch.manual_seed(0)
    model = GPT(cfg)
    targets = ["c_attn", "mlp.c_proj"] + (["c_gate"] if style == "llama" else [])
    model = apply_lora(model, target_modules=targets, r=4, alpha=8)
    assert isinstance(model, GPT)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total / 5
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(cfg.vocab_size, (4, cfg.block_size))
    for _ in range(5):  # B starts at zero: train a little so the adapter does something
        _, loss = model(x[:, :-1].contiguous(), x[:, 1:].contiguous())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        adapted = model(x)[0]
        merged_model = merge_lora(model)
        assert not hasattr(merged_model, "peft_config")
        assert not any("lora" in n for n in merged_model.state_dict())
        merged = merged_model(x)[0]
        plain = GPT(cfg)
        plain.load_state_dict(merged_model.state_dict())  # exactly GPT's parameter names again
        plain.eval()
        from_plain = plain(x)[0]
    assert (adapted - merged).abs().max() < 1e-4
    assert torch.equal(merged, from_plain)
    assert (adapted - GPT(cfg).eval()(x)[0]).abs().max() > 1e-3  # the comparison is not vacuous


def test_lora_on_an_unknown_module_names_the_ones_that_exist():
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match=r"no Linear module named 'q_proj'.*LoRA can target .*c_attn.*c_fc"):
        apply_lora(model, target_modules=["c_attn", "q_proj"])
    with pytest.raises(ValueError, match="tied"):
        apply_lora(model, target_modules=["lm_head"])
    with pytest.raises(ValueError, match="rank"):
        apply_lora(model, target_modules=["c_attn"], r=0)
    assert "c_gate" not in lora_target_names(model) and "c_gate" in lora_target_names(GPT(GPTConfig(**{**TINY, **LLAMA})))
    assert all(p.requires_grad for p in model.parameters())  # a refused call changes nothing


@pytest.mark.smollm2
def test_smollm2_template_mask_covers_assistant_content_and_im_end(smollm2_checkpoint):
    from workers.gpt.chat import render_chat

    _, tok = smollm2_checkpoint
    tok2, template, eot = chat_format(tok, tok.chat_template)
    assert tok2 is tok and template == tok.chat_template and eot == IM_END
    r = render_conversation(CONV[1:], tok, template, eot)
    assert r.ids == tok.encode(render_chat(template, CONV[1:], add_generation_prompt=False), allow_special=True)
    assert r.aligned
    assert r.text.startswith("<|im_start|>system\n")  # SmolLM2's template adds its default system prompt: masked
    trained = tok.decode([i for i, m in zip(r.ids, r.mask) if m])
    assert trained == "I am LLM Lab's assistant.<|im_end|>Four.<|im_end|>"
    # every trained run starts right after "<|im_start|>assistant\n" and ends with <|im_end|>
    im_end = tok.special_tokens[IM_END]
    runs = [i for i in range(len(r.mask)) if r.mask[i] and not r.mask[i - 1]]
    assert len(runs) == 2
    for start in runs:
        assert tok.decode(r.ids[:start]).endswith("<|im_start|>assistant\n")
    assert [r.ids[i] for i in range(len(r.ids) - 1) if r.mask[i] and not r.mask[i + 1]] == [im_end, im_end]
