import math

import pytest
import torch
from torch.nn import functional as F

from workers.gpt.config import GPTConfig, param_count
from workers.gpt.model import GPT, KVCache, apply_rope, rope_cache
from tests.gpt.conftest import LLAMA, TINY


@pytest.mark.parametrize("extra", [
    {},
    dict(bias=False),
    dict(tie_embeddings=False),
    LLAMA,
    {**LLAMA, "bias": True, "tie_embeddings": True, "n_kv_head": 1},
    dict(mlp="swiglu", intermediate_size=40),
])
def test_param_count_matches_the_torch_model(extra):
    cfg = GPTConfig(**{**TINY, **extra})
    model = GPT(cfg)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters())
    assert param_count(cfg, non_embedding=True) == model.get_num_params(non_embedding=True)


def test_loss_at_init_is_about_ln_vocab_size(cfg):
    # with small init every token is about equally likely: the loss starts near ln(V), a quick check of the init
    model = GPT(cfg)
    idx, targets = torch.randint(cfg.vocab_size, (2, 4, cfg.block_size))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.2


def test_changing_a_future_token_does_not_change_earlier_logits(cfg):
    model = GPT(cfg).eval()
    idx = torch.randint(cfg.vocab_size, (1, cfg.block_size))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % cfg.vocab_size
    logits, _ = model(idx)
    logits2, _ = model(changed)
    torch.testing.assert_close(logits[:, :10], logits2[:, :10], rtol=0, atol=0)
    assert not torch.allclose(logits[:, 10:], logits2[:, 10:])


def test_trace_logits_equal_the_fast_path(cfg):
    model = GPT(cfg).eval()
    idx = torch.randint(cfg.vocab_size, (2, cfg.block_size))
    logits, _ = model(idx)
    traced, trace = model.forward_trace(idx)
    torch.testing.assert_close(traced, logits, rtol=1e-5, atol=1e-5)
    assert len(trace.attn) == len(trace.residual) == len(trace.mlp_hidden) == cfg.n_layer
    assert trace.residual[0].shape == (2, cfg.block_size, cfg.n_embd)
    assert trace.mlp_hidden[0].shape == (2, cfg.block_size, cfg.intermediate_size)


def test_trace_attention_rows_sum_to_one_and_are_zero_above_the_diagonal(cfg):
    model = GPT(cfg).eval()
    T = 12
    _, trace = model.forward_trace(torch.randint(cfg.vocab_size, (2, T)))
    for att in trace.attn:
        assert att.shape == (2, cfg.n_head, T, T)
        torch.testing.assert_close(att.sum(-1), torch.ones(2, cfg.n_head, T))
        above = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        assert (att[..., above] == 0).all()


def test_trace_attention_equals_a_reference_computed_from_the_weights(gpt2_cfg):
    # the first layer's attention, written out by hand in float64 from the raw weights
    model = GPT(gpt2_cfg).eval()
    T, nh, hs = 8, gpt2_cfg.n_head, gpt2_cfg.head_size
    idx = torch.randint(gpt2_cfg.vocab_size, (1, T))
    _, trace = model.forward_trace(idx)

    sd = {k: v.double() for k, v in model.state_dict().items()}
    x = sd["transformer.wte.weight"][idx[0]] + sd["transformer.wpe.weight"][:T]  # (T, C)
    x = F.layer_norm(x, (gpt2_cfg.n_embd,), sd["transformer.h.0.ln_1.weight"], sd["transformer.h.0.ln_1.bias"])
    qkv = x @ sd["transformer.h.0.attn.c_attn.weight"].T + sd["transformer.h.0.attn.c_attn.bias"]  # (T, 3C)
    q, k, _ = qkv.split(gpt2_cfg.n_embd, dim=1)
    expected = torch.zeros(nh, T, T, dtype=torch.float64)
    for h in range(nh):
        qh, kh = q[:, h * hs:(h + 1) * hs], k[:, h * hs:(h + 1) * hs]
        for i in range(T):
            scores = torch.tensor([qh[i] @ kh[j] / math.sqrt(hs) for j in range(i + 1)], dtype=torch.float64)
            expected[h, i, :i + 1] = scores.softmax(0)
    torch.testing.assert_close(trace.attn[0][0].double(), expected, rtol=1e-5, atol=1e-6)


def test_rope_scores_depend_only_on_relative_position(llama_cfg):
    cos, sin = rope_cache(llama_cfg)
    q = torch.randn(1, 1, 1, llama_cfg.head_size)
    k = torch.randn(1, 1, 1, llama_cfg.head_size)

    def score(m, n):
        return (apply_rope(q, cos[m:m + 1], sin[m:m + 1]) * apply_rope(k, cos[n:n + 1], sin[n:n + 1])).sum()

    torch.testing.assert_close(score(5, 2), score(12, 9))
    torch.testing.assert_close(score(0, 0), (q * k).sum())  # position 0 is the identity rotation


def test_kv_cache_forward_equals_the_full_forward(cfg):
    model = GPT(cfg).eval()
    idx = torch.randint(cfg.vocab_size, (2, cfg.block_size))
    full, _ = model(idx)
    cache = KVCache.for_model(model, batch_size=2)
    prefill, _ = model(idx[:, :5], kv_cache=cache)
    steps = [prefill]
    steps.append(model(idx[:, 5:8], kv_cache=cache)[0])  # several tokens at once against a filled cache
    for t in range(8, cfg.block_size):
        steps.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.pos == cfg.block_size


def test_grouped_query_cache_holds_only_the_kv_heads(llama_cfg):
    cache = KVCache.for_model(GPT(llama_cfg))
    assert cache.k.shape == (llama_cfg.n_layer, 1, llama_cfg.n_kv_head, llama_cfg.block_size, llama_cfg.head_size)


def test_forward_past_block_size_says_to_crop(gpt2_cfg):
    model = GPT(gpt2_cfg)
    with pytest.raises(ValueError, match="crop the context"):
        model(torch.zeros(1, gpt2_cfg.block_size + 1, dtype=torch.long))


def test_residual_projections_get_the_scaled_init():
    cfg = GPTConfig(**{**TINY, "n_embd": 128, "n_layer": 8})
    model = GPT(cfg)
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(2 * 8)) < 0.001
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.001


def test_optimizer_decays_matrices_but_not_biases_and_norms(gpt2_cfg):
    model = GPT(gpt2_cfg)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == param_count(gpt2_cfg)
