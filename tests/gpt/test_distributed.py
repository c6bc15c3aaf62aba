"""DDP in the training loop (train(..., ddp=True)), on the CPU with gloo: two processes that share the global batch
follow the one-process run.

Tolerance: the ranks' gradients are summed by an all-reduce, in float32, in another order than one process sums its
micro-batches, and the loss is the mean of the ranks' means; that is ~1e-7 relative per step, grown a little by 20
AdamW steps. The losses and the final weights are compared at 1e-5 relative; weights also at 1e-5 absolute, because
AdamW divides by the gradient's own scale, so the rounding of a near-zero gradient moves a near-zero bias by a few
1e-6 (4e-6 seen)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workers.gpt.config import ConfigError, GPTConfig, TrainConfig
from workers.gpt.train import rank_share, train

TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
STEPS = 12


def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(64, (4000,), generator=g)


def configs(**train_changes):
    train_cfg = TrainConfig(**{**dict(batch_size=4, grad_accum=2, max_steps=STEPS, learning_rate=3e-3,
                                      warmup_steps=2, eval_interval=6, eval_iters=2, checkpoint_interval=0,
                                      device="cpu", seed=5), **train_changes})
    return GPTConfig(**TINY), train_cfg


def run_training(rank: int, world: int, port: int, out: str, train_changes: dict) -> None:
    """One rank: join the group, train, and (rank 0) save the logged losses and the final weights."""
    torch.set_num_threads(1)
    if world:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    losses, evals = [], []
    try:
        model_cfg, train_cfg = configs(**train_changes)
        state = train(model_cfg, train_cfg, data(), data()[:1000], ddp=bool(world),
                      on_step=lambda r: losses.append(r["loss"]), on_eval=lambda r, s: evals.append(r["val_loss"]))
        if rank == 0:
            torch.save({"losses": losses, "evals": evals, "weights": state.model.state_dict()}, out)
        else:
            assert losses == [] and evals == [], "only rank 0 reports"
    finally:
        if world:
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trained(tmp_path, world: int, **train_changes) -> dict:
    out = str(tmp_path / f"world{world}.pt")
    if world <= 1:
        run_training(0, world, 0, out, train_changes)  # world 0: the plain path; world 1: ddp with one rank
    else:
        mp.spawn(run_training, args=(world, free_port(), out, train_changes), nprocs=world, join=True)
    return torch.load(out)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("plain"), 0)


def assert_same_run(got: dict, want: dict) -> None:
    assert len(got["losses"]) == len(want["losses"]) == STEPS
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor(got["evals"]), torch.tensor(want["evals"]), rtol=1e-5, atol=0)
    for name, w in want["weights"].items():
        torch.testing.assert_close(got["weights"][name], w, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_two_ranks_sharing_the_micro_batches_follow_the_one_process_run(tmp_path, plain):
    assert_same_run(trained(tmp_path, 2), plain)  # grad_accum 2: one micro-batch each


def test_two_ranks_sharing_the_rows_of_each_micro_batch_follow_the_one_process_run(tmp_path, plain):
    # grad_accum 1 would change the global batch; batch_size 8 x 1 is another run: compare with its own plain run
    one = trained(tmp_path, 0, batch_size=8, grad_accum=1)
    assert_same_run(trained(tmp_path, 2, batch_size=8, grad_accum=1), one)  # 4 rows each


def test_one_rank_under_ddp_is_the_plain_run(tmp_path, plain):
    got = trained(tmp_path, 1)
    assert got["losses"] == plain["losses"]
    for name, w in plain["weights"].items():
        assert torch.equal(got["weights"][name], w), name


def test_the_global_batch_is_shared_into_equal_whole_parts():
    assert rank_share(4, 6, 3, 1) == (range(2, 4), slice(None))  # whole micro-batches when grad_accum divides
    assert rank_share(6, 1, 3, 2) == (range(0, 1), slice(4, 6))  # else rows of every micro-batch
    shares = [rank_share(8, 3, 4, r) for r in range(4)]
    assert [s[1] for s in shares] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]


def test_a_batch_that_cannot_be_shared_is_refused_with_the_values_that_work():
    with pytest.raises(ConfigError, match=r"devices can be 1, 2, 3, 6 here") as e:
        TrainConfig(batch_size=6, grad_accum=1, devices=4)
    assert e.value.field == "devices"
    with pytest.raises(ConfigError, match="cannot be shared among 4 devices"):
        rank_share(6, 1, 4, 0)
