"""Twenty people generating at once (issue 10): continuous batching in the infer worker, against the same requests
run one at a time in the same run. `make bench` prints:

    twenty at once on SmolLM2 (16 tokens each): one stream alone <tok/s> · twenty at once <tok/s> aggregate
        (x<ratio>, target >= 4) · time to first token p50 <s>, p95 <s> (target <= 2 s) · identical to alone: yes
        · load average <1 min>

Every request goes the whole path a page takes (a websocket client → daphne → Redis → a real Celery infer worker →
back), greedy, each with its own prompt. "Alone" is each of them sent only after the previous one finished; its
tokens are the reference the concurrent run must reproduce exactly. Timings are printed, not asserted (the figures
are meant for a quiet machine; the load average says how quiet this one was).
"""

import asyncio
import os
import statistics
import time

import pytest
import torch

from tests.benchmarks.test_generation_speed import smollm2_model, ws_generate
from tests.conftest import Processes, run_async

N_STREAMS = 20
N_NEW = 16
PROMPTS = [f"Question {i + 1}: what is {i + 2} times {i + 3}? Answer:" if i % 2 else
           f"Write one sentence about the number {i + 1}." for i in range(N_STREAMS)]


@pytest.fixture(scope="module")
def live(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    procs = Processes(tmp_path_factory.mktemp("bench"))
    # anonymous visitors get 20 generations a minute; this benchmark alone sends 40
    mp = pytest.MonkeyPatch()
    mp.setenv("INFERENCE_ANON_PER_MINUTE", "1000")
    try:
        with django_db_blocker.unblock():
            url = procs.asgi_server()
            procs.worker("infer", "infer@bench")
        yield url
    finally:
        procs.stop_all()
        mp.undo()


def p95(values):
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


@pytest.mark.django_db(transaction=True)
def test_twenty_streams_at_once_against_one_at_a_time(live):
    row = smollm2_model()
    run_async(ws_generate(live, row.slug, "Hello", 2))  # cold: the worker loads the model

    async def timed(prompt):
        sent = time.perf_counter()
        ttft, _, ids = await ws_generate(live, row.slug, prompt, N_NEW)
        return ttft, time.perf_counter() - sent, ids

    alone = [run_async(timed(p)) for p in PROMPTS]  # one at a time: each sent after the previous finished

    async def together():
        return await asyncio.gather(*(timed(p) for p in PROMPTS))

    started = time.perf_counter()
    concurrent = run_async(together())
    wall = time.perf_counter() - started
    load = os.getloadavg()[0]

    tps_alone = statistics.median(N_NEW / a[1] for a in alone)  # one stream's tokens over its whole time
    tps_together = N_STREAMS * N_NEW / wall
    ratio = tps_together / tps_alone
    ttfts = [c[0] for c in concurrent]
    same = [c[2] for c in concurrent] == [a[2] for a in alone]
    print(f"\ntwenty at once on SmolLM2 ({N_NEW} tokens each, {os.cpu_count()} cores, torch threads in this process "
          f"{torch.get_num_threads()}): one stream alone {tps_alone:.1f} tok/s (TTFT {statistics.median(a[0] for a in alone):.2f} s) · "
          f"twenty at once {tps_together:.1f} tok/s aggregate in {wall:.1f} s (x{ratio:.1f}, target >= 4) · time to "
          f"first token p50 {statistics.median(ttfts):.2f} s, p95 {p95(ttfts):.2f} s (target <= 2 s) · identical to "
          f"alone: {'yes' if same else 'NO'} · load average {load:.2f}")
    assert all(len(a[2]) == N_NEW for a in alone)
    assert same, "each request gets the same greedy tokens in the batch as alone"
