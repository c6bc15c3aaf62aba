import pytest
import torch

from workers.gpt.generate import apply_repetition_penalty, filter_logits, generate
from workers.gpt.model import GPT


def greedy_without_cache(model, tokens, n):
    """The reference: recompute the whole (cropped) context for every token, as nanoGPT's generate() does."""
    tokens = list(tokens)
    with torch.no_grad():
        for _ in range(n):
            idx = torch.tensor([tokens[-model.config.block_size:]])
            tokens.append(int(model(idx)[0][0, -1].argmax()))
    return tokens


def test_kv_cached_greedy_generation_equals_uncached_recomputation(cfg):
    # 5 + 30 tokens run well past block_size (16), so the sliding window is checked too
    model = GPT(cfg).eval()
    prompt = [1, 2, 3, 4, 5]
    out = [t.id for t in generate(model, prompt, max_new_tokens=30, temperature=0)]
    assert prompt + out == greedy_without_cache(model, prompt, 30)


def test_a_prompt_longer_than_block_size_is_cropped_and_flagged(gpt2_cfg):
    model = GPT(gpt2_cfg).eval()
    prompt = list(range(40))
    out = list(generate(model, prompt, max_new_tokens=3, temperature=0))
    assert out[0].cropped
    assert [t.id for t in out] == greedy_without_cache(model, prompt, 3)[40:]
    assert not next(generate(model, prompt[:4], max_new_tokens=1, temperature=0)).cropped


def test_the_same_seed_gives_the_same_tokens(gpt2_cfg):
    model = GPT(gpt2_cfg).eval()

    def run(seed):
        return [t.id for t in generate(model, [0], max_new_tokens=20, temperature=1.5, seed=seed)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_yielded_probabilities_describe_the_sampling_distribution(gpt2_cfg):
    model = GPT(gpt2_cfg).eval()
    for tok in generate(model, [0, 1], max_new_tokens=5, temperature=0.8, top_k=3, seed=0, n_alternatives=5):
        assert len(tok.alternatives) == 3  # top_k left three candidates
        assert sum(p for _, p in tok.alternatives) == pytest.approx(1.0)
        assert tok.id in dict(tok.alternatives) and dict(tok.alternatives)[tok.id] == pytest.approx(tok.prob)
        assert len(tok.raw_alternatives) == 5
        probs = [p for _, p in tok.raw_alternatives]
        assert probs == sorted(probs, reverse=True)


def test_greedy_picks_the_most_likely_token(gpt2_cfg):
    model = GPT(gpt2_cfg).eval()
    first = next(generate(model, [3, 4], max_new_tokens=1, temperature=0))
    expected = int(model(torch.tensor([[3, 4]]))[0][0, -1].argmax())
    assert first.id == expected == first.raw_alternatives[0][0]
    assert first.index == 0 and not first.stop


def test_generation_ends_after_a_stop_token(gpt2_cfg):
    model = GPT(gpt2_cfg).eval()
    free = [t.id for t in generate(model, [0], max_new_tokens=10, temperature=0)]
    stop_at = free[3]
    out = list(generate(model, [0], max_new_tokens=10, temperature=0, stop_ids=[stop_at]))
    assert out[-1].id == stop_at and out[-1].stop
    assert len(out) == free.index(stop_at) + 1


def test_generate_leaves_the_model_in_its_mode(gpt2_cfg):
    model = GPT(gpt2_cfg).train()
    list(generate(model, [0], max_new_tokens=2, temperature=0))
    assert model.training


def test_top_k_keeps_the_k_most_likely():
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0])
    kept = filter_logits(logits, top_k=2)
    assert torch.isfinite(kept).tolist() == [False, True, False, True, False]
    assert kept[1] == 5.0 and kept[3] == 4.0  # survivors are untouched


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.45)).tolist() == [True, False, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.75)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).tolist() == [True, False, False, False]
    shuffled = filter_logits(torch.tensor([0.15, 0.5, 0.05, 0.3]).log(), top_p=0.75)  # order does not matter
    assert torch.isfinite(shuffled).tolist() == [False, True, False, True]


def test_min_p_drops_tokens_below_a_fraction_of_the_most_likely():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert torch.isfinite(filter_logits(logits, min_p=0.25)).tolist() == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, min_p=0.7)).tolist() == [True, False, False, False]


def test_filters_work_on_a_batch_of_rows():
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert torch.isfinite(filter_logits(logits, top_k=1)).tolist() == [[False, False, True], [True, False, False]]


def test_repetition_penalty_makes_seen_tokens_less_likely():
    logits = torch.tensor([2.0, -2.0, 1.0])
    out = apply_repetition_penalty(logits, [0, 1, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]
    assert apply_repetition_penalty(logits, [0], 1.0) is logits


def test_bad_arguments_say_what_to_do(gpt2_cfg):
    model = GPT(gpt2_cfg)
    with pytest.raises(ValueError, match="at least one token id"):
        next(generate(model, [], max_new_tokens=1))
    with pytest.raises(ValueError, match="0 is greedy"):
        next(generate(model, [0], max_new_tokens=1, temperature=-1))
