"""Continuous batching (workers/gpt/batch_generate.py): a request's tokens do not depend on what else is in the batch.

Alone in a Batch a request is generate(), bit for bit. In a batch of several its bits are the same whoever the others
are, and its tokens are its alone tokens; only its probabilities may differ from alone by ~1e-7 (a matrix-matrix
instead of a matrix-vector kernel, see the module docstring)."""

import pytest
import torch

from tests.gpt.conftest import LLAMA
from tests.smollm2 import smollm2_checkpoint, smollm2_gguf  # noqa: F401  (fixtures)
from workers.gpt import batch_generate
from workers.gpt.batch_generate import Batch, forward_packed
from workers.gpt.config import GPTConfig
from workers.gpt.generate import generate
from workers.gpt.model import GPT, KVCache

BASE = dict(vocab_size=96, block_size=48, n_layer=2, n_head=4, n_embd=32)

REQUESTS = [  # (prompt, settings): greedy, seeded sampling with every filter, a one-token prompt, long prompts
    ([3, 1, 4, 1, 5, 9, 2, 6], dict(max_new_tokens=12, temperature=0)),
    ([7] * 20, dict(max_new_tokens=9, temperature=0.9, top_k=20, seed=11)),
    ([2], dict(max_new_tokens=15, temperature=1.3, top_p=0.8, min_p=0.05, seed=3, repetition_penalty=1.3)),
    (list(range(40)), dict(max_new_tokens=20, temperature=0, repetition_penalty=1.2)),  # slides past block_size
    ([5, 6], dict(max_new_tokens=30, temperature=0.7, seed=5, stop_ids=[1, 2, 3])),  # may stop early
    (list(range(10, 45)), dict(max_new_tokens=6, temperature=1.0, seed=8, n_alternatives=3)),
]


@pytest.fixture(params=["gpt2", "llama"])
def model(request):
    cfg = GPTConfig(**BASE) if request.param == "gpt2" else GPTConfig(**{**BASE, **LLAMA})
    return GPT(cfg).eval()


def alone(model, prompt, settings):
    batch = Batch(model)
    batch.add(prompt, **settings)
    out = []
    while len(batch):
        out += [token for _, token in batch.step()]
    return out


def test_each_request_gets_its_alone_output_when_requests_join_and_leave_mid_batch(model, monkeypatch):
    monkeypatch.setattr(batch_generate, "PREFILL_CHUNK", 16)  # prompts are read in pieces, interleaved with decoding
    monkeypatch.setattr(batch_generate, "PREFILL_BUDGET", 16)
    expected = [alone(model, prompt, settings) for prompt, settings in REQUESTS]
    batch, got, rows = Batch(model), {i: [] for i in range(len(REQUESTS))}, {}
    joins = {0: [0, 1], 2: [2], 3: [3, 4], 7: [5]}  # step -> requests joining before it
    step = 0
    while len(batch) or step <= max(joins):
        for i in joins.get(step, []):
            rows[i] = batch.add(REQUESTS[i][0], tag=i, **REQUESTS[i][1])
        for row, token in batch.step():
            got[row.tag].append(token)
        step += 1
    for i, tokens in enumerate(expected):
        assert [t.id for t in got[i]] == [t.id for t in tokens], f"request {i} got other tokens batched"
        assert [(t.index, t.cropped, t.stop) for t in got[i]] == [(t.index, t.cropped, t.stop) for t in tokens]
        assert [t.prob for t in got[i]] == pytest.approx([t.prob for t in tokens], rel=1e-4, abs=1e-6)
    assert any(t.stop for t in expected[4]) or len(expected[4]) == 30
    assert expected[3][-1].cropped and [t.index for t in expected[3]] == list(range(20))


def test_a_request_alone_is_generate_bit_for_bit(model):
    for prompt, settings in REQUESTS:
        assert alone(model, prompt, settings) == list(generate(model, prompt, **settings))


def test_a_rows_bits_do_not_depend_on_who_else_is_in_the_batch(model):
    def together(indices):
        batch, got = Batch(model), {i: [] for i in indices}
        for i in indices:
            batch.add(REQUESTS[i][0], tag=i, **REQUESTS[i][1])
        while len(batch):
            for row, token in batch.step():
                got[row.tag].append(token)
        return got

    # request 3 outlasts request 0, so request 0 is never alone in a step (alone is generate()'s kernel)
    assert together([0, 3])[0] == together([0, 3, 1, 2, 5])[0] == together([3, 5, 0])[0]


def test_a_removed_row_leaves_and_the_others_carry_on(model):
    prompt, settings = REQUESTS[0]
    expected = alone(model, prompt, settings)
    batch = Batch(model)
    keep = batch.add(prompt, **settings)
    gone = batch.add([9, 9, 9], max_new_tokens=50, temperature=0)
    got = []
    for step in range(len(expected)):
        if step == 3:
            batch.remove(gone)
            assert gone.done and batch.rows == [keep]
        got += [t for row, t in batch.step() if row is keep]
    assert [t.id for t in got] == [t.id for t in expected] and len(batch) == 0


def test_the_packed_forward_equals_the_model_with_a_cache_per_request(model):
    """Logits of one packed pass over three requests at different positions = three model() calls."""
    prompts = [[1, 2, 3, 4, 5], [6] * 11, [7, 8]]
    caches = [KVCache.for_model(model, max_seq_len=32) for _ in prompts]
    ours = [KVCache.for_model(model, max_seq_len=32) for _ in prompts]
    with torch.inference_mode():
        for cache, ids in zip(caches, prompts):
            model(torch.tensor([ids[:-1]]), kv_cache=cache)
        forward_packed(model, [(cache, ids[:-1]) for cache, ids in zip(ours, prompts)])
        ref = torch.stack([model(torch.tensor([ids[-1:]]), kv_cache=c)[0][0, -1] for c, ids in zip(caches, prompts)])
        got = forward_packed(model, [(cache, ids[-1:]) for cache, ids in zip(ours, prompts)])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert [c.pos for c in ours] == [len(p) for p in prompts]


def test_bad_arguments_are_refused_with_generates_messages(model):
    batch = Batch(model)
    with pytest.raises(ValueError, match="idx_list is empty"):
        batch.add([], max_new_tokens=3)
    with pytest.raises(ValueError, match="temperature"):
        batch.add([1], max_new_tokens=3, temperature=-1)
    assert len(batch) == 0 and batch.step() == []


@pytest.mark.smollm2
def test_smollm2_batched_greedy_equals_alone(smollm2_checkpoint):
    from workers.gpt import checkpoint

    path, tok = smollm2_checkpoint
    model = checkpoint.load_model(path)
    prompts = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "1, 2, 3, 4,"]
    ids = [tok.encode(p) for p in prompts]
    settings = dict(max_new_tokens=8, temperature=0)
    expected = [[t.id for t in alone(model, p, settings)] for p in ids]
    batch, got = Batch(model), {}
    for i, p in enumerate(ids):
        batch.add(p, tag=i, **settings)
        got[i] = []
    while len(batch):
        for row, token in batch.step():
            got[row.tag].append(token.id)
    assert [got[i] for i in range(len(ids))] == expected
    assert expected[0] == [t.id for t in generate(model, ids[0], **settings)]
