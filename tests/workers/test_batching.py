"""The batching scheduler (workers/batching.py): requests submitted from many threads share one batch, each gets the
tokens it would get alone, and one that leaves early frees its place at the next step."""

import threading

import pytest
import torch

from workers import batching
from workers.gpt.config import GPTConfig
from workers.gpt.generate import generate
from workers.gpt.model import GPT

SETTINGS = [  # different sampling for each request: greedy, seeded with filters, penalties, stop ids
    dict(max_new_tokens=25, temperature=0),
    dict(max_new_tokens=18, temperature=0.8, top_k=10, seed=1),
    dict(max_new_tokens=30, temperature=1.2, top_p=0.9, min_p=0.02, seed=2, repetition_penalty=1.4),
    dict(max_new_tokens=12, temperature=0, repetition_penalty=1.1, stop_ids=[5]),
    dict(max_new_tokens=40, temperature=1.0, seed=3),
    dict(max_new_tokens=7, temperature=0.5, seed=4, n_alternatives=2),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=80, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


def prompt(i):
    return [(7 * i + j) % 80 for j in range(3 + 4 * i)]


def alone(model, i):
    """Request i through a scheduler of its own, with nobody else in the batch."""
    return list(batching.Scheduler(model).submit(prompt(i), **SETTINGS[i]))


def test_requests_from_many_threads_share_steps_and_each_gets_its_alone_output(model):
    expected = [alone(model, i) for i in range(len(SETTINGS))]
    scheduler = batching.Scheduler(model)
    got, go = {}, threading.Barrier(len(SETTINGS))

    def client(i):
        go.wait()
        got[i] = list(scheduler.submit(prompt(i), **SETTINGS[i]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(SETTINGS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, tokens in enumerate(expected):
        assert [t.id for t in got[i]] == [t.id for t in tokens], f"request {i} got other tokens in the batch"
    assert scheduler.largest > 1, "the requests were served together"
    assert scheduler.steps < sum(len(t) for t in expected)
    # alone is generate(): the same tokens; their probabilities to float32 rounding, since a lone row decodes on
    # one thread (workers/batching.py SOLO_THREADS) and generate() here on torch's, which sum in another order
    plain = list(generate(model, prompt(0), **SETTINGS[0]))
    assert [t.id for t in expected[0]] == [t.id for t in plain]
    assert [t.prob for t in expected[0]] == pytest.approx([t.prob for t in plain], rel=1e-5)
    assert [a for t in expected[0] for _, a in t.alternatives] == pytest.approx(
        [a for t in plain for _, a in t.alternatives], rel=1e-5)


def test_a_request_joining_mid_stream_and_one_leaving_early_change_nothing_for_the_others(model):
    expected = {i: alone(model, i) for i in (0, 4)}
    scheduler = batching.Scheduler(model)
    first = scheduler.submit(prompt(0), **SETTINGS[0])
    early = scheduler.submit(prompt(2), **SETTINGS[2])
    got_first = [next(first) for _ in range(5)]
    late = scheduler.submit(prompt(4), **SETTINGS[4])  # joins while the others are decoding
    next(early)
    early.close()  # the client hung up
    assert list(early) == []
    got_first += list(first)
    assert [t.id for t in got_first] == [t.id for t in expected[0]]
    assert [t.id for t in late] == [t.id for t in expected[4]]


def test_a_closed_stream_leaves_the_batch_at_the_next_step(model):
    scheduler = batching.Scheduler(model)
    stream = scheduler.submit(prompt(1), max_new_tokens=50, temperature=0)
    next(stream)
    stream.close()
    done = scheduler.submit(prompt(0), **SETTINGS[0])
    list(done)  # served after the close was handled: the closed row is gone by now
    assert scheduler.batch.rows == []


def test_bad_arguments_fail_that_request_only(model):
    scheduler = batching.Scheduler(model)
    good = scheduler.submit(prompt(0), **SETTINGS[0])
    with pytest.raises(ValueError, match="temperature"):
        list(scheduler.submit(prompt(1), max_new_tokens=3, temperature=-1))
    assert len(list(good)) == SETTINGS[0]["max_new_tokens"]


def test_an_idle_scheduler_ends_its_thread_and_a_new_request_starts_another(model):
    scheduler = batching.Scheduler(model, idle_seconds=0.05)
    assert len(list(scheduler.submit(prompt(0), max_new_tokens=3, temperature=0))) == 3
    thread = scheduler.thread
    if thread is not None:
        thread.join(10)
    assert scheduler.thread is None
    assert len(list(scheduler.submit(prompt(0), max_new_tokens=3, temperature=0))) == 3


def test_there_is_one_scheduler_per_loaded_model(model):
    other = GPT(GPTConfig(vocab_size=80, block_size=64, n_layer=1, n_head=2, n_embd=32)).eval()
    assert batching.scheduler_for(model) is batching.scheduler_for(model)
    assert batching.scheduler_for(other) is not batching.scheduler_for(model)


def test_a_failing_step_fails_its_requests_and_the_scheduler_carries_on(model, monkeypatch):
    scheduler = batching.Scheduler(model)
    real = scheduler.batch.step
    calls = []

    def broken():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real()

    monkeypatch.setattr(scheduler.batch, "step", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(scheduler.submit(prompt(0), **SETTINGS[0]))
    assert list(scheduler.submit(prompt(0), **SETTINGS[0])) == alone(model, 0)  # alone both times: same bits


def test_a_lone_decoding_step_runs_on_solo_threads_and_shared_work_on_all(model):
    scheduler = batching.Scheduler(model, threads=4)
    lone = scheduler.batch.add(prompt(1), max_new_tokens=5, temperature=0)
    assert scheduler.step_threads([lone]) == 4  # its prompt: a matrix-matrix product worth splitting
    scheduler.batch.step()
    assert scheduler.step_threads([lone]) == batching.SOLO_THREADS  # one token of one row
    other = scheduler.batch.add(prompt(2), max_new_tokens=5, temperature=0)
    scheduler.batch.step()
    assert scheduler.step_threads([lone, other]) == 4  # several rows share each step
