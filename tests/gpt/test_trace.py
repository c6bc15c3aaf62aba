"""The explorer's trace: checked against a forward pass written out in float64 numpy from the raw weights."""

import math

import numpy as np
import pytest
import torch

from workers.gpt.config import GPTConfig
from workers.gpt.model import GPT
from workers.gpt.trace import (dequantize_attention, head_statistics, pack, quantize_attention,
                               token_label, trace_forward, unpack)
from tests.gpt.conftest import TINY


def _bytes(i: int) -> bytes:
    return f"t{i}".encode()


def reference_forward(model: GPT, ids: list[int]):
    """The whole model by hand in float64: returns (attention per layer (H, T, T), residual after each block,
    last-position logits). Handles both block styles: LayerNorm/GELU/learned positions and RMSNorm/SwiGLU/RoPE/GQA."""
    cfg = model.config
    sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    T, C, nh, nkv, hs = len(ids), cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_size

    def norm(x, prefix):
        if cfg.norm == "rmsnorm":
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.norm_eps) * sd[prefix + ".weight"]
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + cfg.norm_eps) * sd[prefix + ".weight"]
        return y + sd[prefix + ".bias"] if cfg.bias else y

    def linear(x, prefix):
        y = x @ sd[prefix + ".weight"].T
        return y + sd[prefix + ".bias"] if prefix + ".bias" in sd else y

    def rope(x, pos):  # x (hs,) at position pos, the "rotate half" layout
        d = hs // 2
        inv = 1.0 / (cfg.rope_theta ** (np.arange(0, hs, 2) / hs))
        cos, sin = np.cos(pos * inv), np.sin(pos * inv)
        return np.concatenate([x[:d] * cos - x[d:] * sin, x[:d] * sin + x[d:] * cos])

    x = sd["transformer.wte.weight"][ids]
    if cfg.pos == "learned":
        x = x + sd["transformer.wpe.weight"][:T]
    attns, residuals = [], []
    for layer in range(cfg.n_layer):
        p = f"transformer.h.{layer}"
        h = norm(x, p + ".ln_1")
        qkv = linear(h, p + ".attn.c_attn")
        q = qkv[:, :nh * hs].reshape(T, nh, hs)
        k = qkv[:, nh * hs:(nh + nkv) * hs].reshape(T, nkv, hs)
        v = qkv[:, (nh + nkv) * hs:].reshape(T, nkv, hs)
        att = np.zeros((nh, T, T))
        y = np.zeros((T, nh, hs))
        for head in range(nh):
            kv = head // (nh // nkv)  # grouped-query attention: consecutive query heads share a key/value head
            for i in range(T):
                qi = rope(q[i, head], i) if cfg.pos == "rope" else q[i, head]
                scores = np.array([qi @ (rope(k[j, kv], j) if cfg.pos == "rope" else k[j, kv]) for j in range(i + 1)])
                w = np.exp(scores / math.sqrt(hs) - (scores / math.sqrt(hs)).max())
                att[head, i, :i + 1] = w / w.sum()
                y[i, head] = att[head, i, :i + 1] @ v[:i + 1, kv]
        x = x + linear(y.reshape(T, C), p + ".attn.c_proj")
        h = norm(x, p + ".ln_2")
        if cfg.mlp == "swiglu":
            g = linear(h, p + ".mlp.c_gate")
            hidden = g / (1 + np.exp(-g)) * linear(h, p + ".mlp.c_fc")
        else:
            u = linear(h, p + ".mlp.c_fc")
            hidden = 0.5 * u * (1 + np.vectorize(math.erf)(u / math.sqrt(2)))
        x = x + linear(hidden, p + ".mlp.c_proj")
        attns.append(att)
        residuals.append(x)
    final = norm(x, "transformer.ln_f")
    logits = final[-1] @ sd["lm_head.weight"].T
    return attns, residuals, logits


@pytest.fixture(params=["gpt2", "llama"])
def model(request):
    torch.manual_seed(0)
    extra = {} if request.param == "gpt2" else dict(norm="rmsnorm", pos="rope", mlp="swiglu", n_head=4, n_kv_head=2,
                                                      bias=False, tie_embeddings=False)
    m = GPT(GPTConfig(**{**TINY, **extra})).eval()
    # bigger weights than the init: sharper attention, so a wrong mask or head order cannot hide in near-uniform rows
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4.0)
    return m


def test_trace_attention_equals_the_reference_from_the_weights_in_every_layer_and_head(model):
    ids = [3, 17, 5, 60, 2, 2, 41, 9, 33, 1]
    result = trace_forward(model, ids, token_bytes=_bytes)
    attns, residuals, logits = reference_forward(model, ids)
    np.testing.assert_allclose(result.attn, np.stack(attns), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.residual_norm[1:], np.linalg.norm(np.stack(residuals), axis=-1), rtol=1e-4)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-4, atol=1e-4)
    assert np.std(result.attn[result.attn > 0]) > 0.1, "the test needs non-uniform attention to mean anything"


def test_packed_attention_rows_sum_to_one_and_respect_the_causal_mask(model):
    ids = list(range(1, TINY["block_size"] + 1))
    result = trace_forward(model, ids, token_bytes=_bytes)
    header, arrays = unpack(pack(result))
    T = header["n_tokens"]
    att = dequantize_attention(arrays["attn"], T)
    assert att.shape == (model.config.n_layer, model.config.n_head, T, T)
    # each stored weight is within half a quantization step of the exact one: step = 2 sqrt(p) / 255
    np.testing.assert_allclose(att, result.attn, atol=2 * 0.5 / 255 + 1e-6)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=T * (0.5 / 255))
    assert (att[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0).all()
    assert arrays["attn"].nbytes == model.config.n_layer * model.config.n_head * T * (T + 1) // 2


def test_changing_a_later_token_leaves_earlier_attention_unchanged(model):
    ids = [4, 8, 15, 16, 23, 42]
    a = trace_forward(model, ids, token_bytes=_bytes).attn
    b = trace_forward(model, ids[:-1] + [7], token_bytes=_bytes).attn
    np.testing.assert_array_equal(a[..., :-1, :-1], b[..., :-1, :-1])
    assert not np.allclose(a[..., -1, :], b[..., -1, :])


def test_next_token_guesses_and_target_probabilities_agree_with_the_logits(model):
    ids = [1, 2, 3, 4, 5]
    result = trace_forward(model, ids, token_bytes=_bytes)
    probs = torch.tensor(result.logits).softmax(-1).numpy()
    np.testing.assert_allclose(result.next_probs[-1], np.sort(probs)[::-1][:5], rtol=1e-5)
    assert result.next_ids[-1, 0] == probs.argmax()
    with torch.no_grad():
        full = model(torch.tensor([ids]))[0][0].softmax(-1).numpy()
    np.testing.assert_allclose(result.target_prob[:-1], full[np.arange(4), ids[1:]], rtol=1e-5)
    assert np.isnan(result.target_prob[-1])
    assert all(i in result.vocab for i in result.next_ids.flatten().tolist())


def test_residual_writes_add_up_to_the_stream(model):
    result = trace_forward(model, [5, 6, 7, 8], token_bytes=_bytes)
    # the norm of a sum is at most the sum of the norms: every block's writes must explain its change
    change = np.abs(np.diff(result.residual_norm, axis=0))
    assert (change <= result.attn_write_norm + result.mlp_write_norm + 1e-4).all()


def test_mlp_top_neurons_carry_their_real_activations(model):
    ids = [9, 8, 7, 6, 5]
    result = trace_forward(model, ids, token_bytes=_bytes)
    with torch.no_grad():
        _, tr = model.forward_trace(torch.tensor([ids]))
    for layer, hidden in enumerate(tr.mlp_hidden):
        h = hidden[0].numpy()  # (T, I)
        top = np.argsort(h.max(0))[::-1][:result.mlp_neurons.shape[1]]
        assert set(result.mlp_neurons[layer]) == set(top)
        np.testing.assert_allclose(result.mlp_values[layer], h[:, result.mlp_neurons[layer]].T, rtol=1e-6)
        np.testing.assert_array_equal(result.mlp_token_neuron[layer], h.argmax(1))


def test_head_statistics_recognise_a_previous_token_head_and_a_sink():
    T = 6
    prev = np.zeros((T, T))
    prev[0, 0] = 1
    prev[np.arange(1, T), np.arange(T - 1)] = 1
    sink = np.zeros((T, T))
    sink[:, 0] = 1
    stats = head_statistics(np.stack([prev, sink])[None].astype(np.float32))  # (1, 2, 4)
    entropy, previous, first, self_ = stats[0].T
    np.testing.assert_allclose(previous, [1.0, 0.2])  # the sink's row 1 is also "previous"
    np.testing.assert_allclose(first, [0.2, 1.0])
    np.testing.assert_allclose(entropy, [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(self_, [0.0, 0.0])


def test_quantization_keeps_small_weights_small_and_round_trips():
    p = np.array([[[[1.0, 0, 0], [0.9996, 0.0004, 0], [0.5, 0.3, 0.2]]]], dtype=np.float32)
    back = dequantize_attention(quantize_attention(p), 3)
    assert 0 < back[0, 0, 1, 1] < 0.001
    np.testing.assert_allclose(back, p, atol=0.004)


def test_a_blob_is_refused_when_it_is_not_a_trace():
    with pytest.raises(ValueError, match="bad magic"):
        unpack(b"GIF89a" + b"\0" * 20)


def test_tokens_that_are_half_a_character_are_shown_as_escapes():
    assert token_label("猫".encode()[:2]) == "\\xe7\\x8c"
    assert token_label(b" cat") == " cat"


def test_too_long_or_empty_input_is_refused_with_what_to_do(model):
    with pytest.raises(ValueError, match="truncate"):
        trace_forward(model, list(range(TINY["block_size"] + 1)), token_bytes=_bytes)
    with pytest.raises(ValueError, match="zero tokens"):
        trace_forward(model, [], token_bytes=_bytes)
