import pytest
import torch

from workers.gpt.generate import forward_rows, generate, generate_batch, left_pad
from workers.gpt.model import GPT

PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [9], [3, 1, 4, 1], [5, 9, 2, 6, 5, 3, 5, 8, 9, 7]]


def one_at_a_time(model, prompt, n, stop_ids=()):
    # stop at the context, as generate_batch does (generate() would slide its window instead)
    n = min(n, model.config.block_size - len(prompt))
    return [t.id for t in generate(model, prompt, max_new_tokens=n, temperature=0, stop_ids=stop_ids)]


def test_padded_rows_give_the_logits_of_each_row_alone(cfg):
    model = GPT(cfg).eval()
    idx, positions, valid = left_pad(PROMPTS)
    with torch.no_grad():
        logits = forward_rows(model, idx, positions, valid)  # (B, T, V)
        for b, p in enumerate(PROMPTS):
            alone = model(torch.tensor([p]))[0][0]  # (len, V)
            torch.testing.assert_close(logits[b, -len(p):], alone, atol=1e-5, rtol=1e-5)


def test_batched_greedy_equals_one_at_a_time_for_prompts_of_different_lengths(cfg):
    model = GPT(cfg).eval()
    batched = generate_batch(model, PROMPTS, max_new_tokens=8, temperature=0)
    assert batched == [one_at_a_time(model, p, 8) for p in PROMPTS]


def test_rows_are_cut_at_the_context(cfg):
    model = GPT(cfg).eval()  # block_size 16
    batched = generate_batch(model, PROMPTS, max_new_tokens=50, temperature=0)
    assert [len(p) + len(o) for p, o in zip(PROMPTS, batched)] == [16] * len(PROMPTS)
    assert batched == [one_at_a_time(model, p, 50) for p in PROMPTS]


def test_each_row_stops_after_its_stop_token(gpt2_cfg):
    model = GPT(gpt2_cfg).eval()
    free = [one_at_a_time(model, p, 8) for p in PROMPTS]
    stop = free[0][2]
    batched = generate_batch(model, PROMPTS, max_new_tokens=8, temperature=0, stop_ids=[stop])
    assert batched == [one_at_a_time(model, p, 8, stop_ids=[stop]) for p in PROMPTS]
    assert batched[0][-1] == stop and len(batched[0]) == free[0].index(stop) + 1 < len(free[0])


def test_the_same_generator_state_gives_the_same_samples(gpt2_cfg):
    model = GPT(gpt2_cfg).eval()

    def run(seed):
        return generate_batch(model, [[1, 2]] * 4, max_new_tokens=10, temperature=1.5,
                              generator=torch.Generator().manual_seed(seed))

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert len({tuple(r) for r in run(1)}) > 1  # the rows of one prompt are different samples


def test_generate_batch_leaves_the_model_in_its_mode(gpt2_cfg):
    model = GPT(gpt2_cfg).train()
    generate_batch(model, [[1]], max_new_tokens=2, temperature=0)
    assert model.training


@pytest.mark.parametrize("prompts, message", [
    ([], "prompts_ids is empty"), ([[1], []], "prompt 1 is empty"), ([list(range(16))], "leaves no room"),
])
def test_bad_prompts_are_refused(gpt2_cfg, prompts, message):
    with pytest.raises(ValueError, match=message):
        generate_batch(GPT(gpt2_cfg), prompts, max_new_tokens=2)


def test_a_module_that_is_not_a_gpt_is_refused():
    with pytest.raises(TypeError, match="not a workers.gpt.model.GPT"):
        generate_batch(torch.nn.Linear(2, 2), [[1]], max_new_tokens=2)
