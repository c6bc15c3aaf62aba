"""Distributed training on this machine: 2 gloo processes on 2 cores against 1 process, and the cost of the
distributed code path itself (train(..., ddp=True) in a group of one) against the plain path, measured in the same
run, alternating, best of ROUNDS.

All three train the 'Shakespeare char, CPU' preset's shapes (4 layers, n_embd 128, block 64) on the same global batch
(batch_size 12), each in its own process with one torch thread per process; tokens/s is the median of the loop's own
per-step reports after SKIP warmup steps (global tokens per step / step time, as rank 0 reports it).

    make bench   (prints both ratios; expect no speed-up from 2 processes on 2 shared cores — this proves the
                  mechanics, not speed — and a distributed-path overhead <= 5 %: ratio >= 0.95)
"""

import os
import statistics

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workers.distributed import free_port
from workers.gpt.config import GPTConfig, TrainConfig
from workers.gpt.train import train

STEPS = int(os.environ.get("BENCH_DDP_STEPS", 60))
SKIP = 10
ROUNDS = int(os.environ.get("BENCH_DDP_ROUNDS", 3))
MODEL = dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
TRAIN = dict(batch_size=12, max_steps=STEPS, eval_interval=STEPS, eval_iters=1, checkpoint_interval=0,
             learning_rate=1e-3, warmup_steps=10, device="cpu", seed=1)


def one_rank(rank: int, world: int, port: int, queue) -> None:
    """world 0: the plain path; else rank `rank` of a gloo group of `world`. Rank 0 puts its median tokens/s."""
    torch.set_num_threads(1)
    if world:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    speeds = []
    data = torch.randint(65, (200_000,), generator=torch.Generator().manual_seed(0))
    train(GPTConfig(**MODEL), TrainConfig(**TRAIN), data, data[:5000], ddp=bool(world),
          on_step=lambda r: speeds.append(r["tokens_per_s"]) if r["step"] > SKIP else None)
    if rank == 0:
        queue.put(statistics.median(speeds))
    if world:
        dist.destroy_process_group()


def measure(world: int) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=one_rank, args=(r, world, port, queue)) for port in [free_port()]
             for r in range(max(world, 1))]
    for p in procs:
        p.start()
    speed = queue.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return speed


def test_two_gloo_processes_against_one_and_the_distributed_path_overhead():
    speeds = {"plain": [], "ddp1": [], "ddp2": []}
    for _ in range(ROUNDS):
        speeds["plain"].append(measure(0))
        speeds["ddp1"].append(measure(1))
        speeds["ddp2"].append(measure(2))
    best = {k: max(v) for k, v in speeds.items()}
    overhead = best["ddp1"] / best["plain"]
    scaling = best["ddp2"] / best["plain"]
    print(f"\nDDP on this machine ({os.cpu_count()} cores), 'Shakespeare char, CPU' shapes, global batch 12, "
          f"best of {ROUNDS} x {STEPS} steps:")
    print(f"  plain path, 1 process            {best['plain']:9,.0f} tokens/s")
    print(f"  ddp path, group of 1             {best['ddp1']:9,.0f} tokens/s")
    print(f"  ddp path, 2 gloo processes       {best['ddp2']:9,.0f} tokens/s")
    print(f"  2 processes / 1 process = {scaling:.3f}  (2 cores shared with other work: a ratio above 1 "
          f"means two processes got two shares of a busy CPU; this proves the mechanics, not speed)")
    print(f"  ddp group of 1 / plain  = {overhead:.3f}  (target >= 0.95: {'ok' if overhead >= 0.95 else 'MISSED'})")
    assert all(v > 0 for v in best.values())
