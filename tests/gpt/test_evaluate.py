"""evaluate.py: Wilson interval against known values, loss/perplexity and log-likelihoods against hand
computations, multiple choice and generate-then-check on a tiny model trained on what it is asked."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from workers.gpt.config import GPTConfig
from workers.gpt.evaluate import (accuracy, encode_pair, generate_and_check, loglikelihood, multiple_choice,
                                  token_loss, wilson_interval)
from workers.gpt.model import GPT
from workers.gpt.tokenizers import CharTokenizer, get_builtin

from .conftest import TINY

TEXT = "the cat sat on the mat.\nthe dog lay on the rug.\n"


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_interval_matches_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def _wilson_by_bisection(k, n, z=1.959963984540054):
    """The Wilson bounds from their definition, the p with (p - k/n)^2 = z^2 p (1 - p) / n, found by bisection."""
    ph = k / n

    def solve(a, b):
        f = lambda p: (p - ph) ** 2 - z * z * p * (1 - p) / n  # noqa: E731
        for _ in range(100):
            m = (a + b) / 2
            a, b = (m, b) if (f(a) > 0) == (f(m) > 0) else (a, m)
        return (a + b) / 2

    return (solve(0.0, ph) if k else 0.0), (solve(ph, 1.0) if k < n else 1.0)


@pytest.mark.parametrize("k, n", [(1, 3), (17, 40), (499, 500), (250, 1000)])
def test_wilson_interval_solves_its_defining_equation(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_bisection(k, n), abs=1e-9)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    assert accuracy([True, False, True, True]) == {"n": 4, "correct": 3, "accuracy": 0.75,
                                                    **dict(zip(("low", "high"), wilson_interval(3, 4)))}


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.from_text(TEXT)


@pytest.fixture(scope="module")
def trained(tok):
    """A tiny GPT that has memorised TEXT (a few hundred steps on its windows)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": tok.n_vocab, "block_size": 32}))
    data = torch.tensor(tok.encode(TEXT * 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    starts = torch.arange(0, data.numel() - 33)
    for _ in range(150):
        i = starts[torch.randint(len(starts), (16,))]
        x = torch.stack([data[s:s + 32] for s in i])
        y = torch.stack([data[s + 1:s + 33] for s in i])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_token_loss_is_the_mean_cross_entropy_over_every_token(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": tok.n_vocab})).eval()
    data = torch.tensor(tok.encode(TEXT))  # 48 tokens, block_size 16: windows of 16, 16, 15 predictions
    out = token_loss(model, data.numpy(), batch_size=2)
    assert out["n_tokens"] == data.numel() - 1
    total = 0.0
    with torch.no_grad():
        for s in range(0, data.numel() - 1, 16):
            x, y = data[s:s + 16][None], data[s + 1:s + 17][None]
            x = x[:, :y.size(1)]
            total += F.cross_entropy(model(x)[0][0], y[0], reduction="sum").item()
    assert out["loss"] == pytest.approx(total / (data.numel() - 1), rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(out["loss"]))
    assert token_loss(model, data.numpy().astype(np.uint16), max_tokens=17) == token_loss(model, data[:17])


def test_loglikelihood_equals_a_hand_computation(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": tok.n_vocab})).eval()
    ctx, cont = tok.encode("the cat sat"), tok.encode(" on")
    ll, _ = loglikelihood(model, ctx, cont)
    ids = ctx + cont
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids]))[0][0], dim=-1)
    hand = sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
    assert ll == pytest.approx(hand, abs=1e-5)


def test_multiple_choice_picks_what_the_model_learned_and_normalises_by_length(trained, tok):
    problems = [{"context": "the cat sat on the", "choices": [" rug", " mat", " dog", " cat"], "answer": 1},
                {"context": "the dog lay on the", "choices": [" mat", " cat", " rug", " dog"], "answer": 2},
                {"context": "the dog lay on the", "choices": [" mat", " cat", " dog", " rug"], "answer": 0}]
    out = multiple_choice(trained, tok, problems)
    assert [r["pred"] for r in out["results"]] == [1, 2, 3]
    assert out["acc"]["correct"] == 2 and out["acc"]["n"] == 3
    for p, r in zip(problems, out["results"]):
        normed = [ll / len(c) for ll, c in zip(r["loglikelihoods"], p["choices"])]
        assert r["pred_norm"] == max(range(4), key=normed.__getitem__)
        assert r["loglikelihoods"][r["pred"]] == max(r["loglikelihoods"])
    with pytest.raises(ValueError, match="not an index"):
        multiple_choice(trained, tok, [{"context": "the", "choices": [" cat"], "answer": 3}])


def test_encode_pair_tokenizes_the_choice_as_in_running_text():
    gpt2 = get_builtin("gpt2")
    ctx, cont = encode_pair(gpt2, "Long live the", " king")
    assert ctx == gpt2.encode("Long live the") and cont == gpt2.encode(" king") and len(cont) == 1


def test_generate_and_check_answers_greedily_and_stops_at_end_of_turn(trained, tok):
    newline = tok.encode("\n")[0]
    problems = [{"prompt": "the cat sat on the", "answer": " mat."},
                {"prompt": "the dog lay on the", "answer": " mat."}]
    out = generate_and_check(trained, tok, problems, prompt_ids=lambda p: tok.encode(p["prompt"]),
                             checker=lambda p, answer: answer == p["answer"], stop_ids=[newline],
                             max_new_tokens=10)
    assert [r["answer"] for r in out["results"]] == [" mat.", " rug."]
    assert [r["correct"] for r in out["results"]] == [True, False]
    assert out["accuracy"]["correct"] == 1 and out["ended"]["correct"] == 2
    short = generate_and_check(trained, tok, problems[:1], prompt_ids=lambda p: tok.encode(p["prompt"]),
                               checker=lambda p, a: True, stop_ids=[newline], max_new_tokens=2)
    assert short["results"][0] == {"answer": " m", "correct": True, "ended": False, "n_tokens": 2}
