import math

import pytest
import torch

from workers.gpt import train as train_module
from workers.gpt.checkpoint import load_checkpoint, save_train_state
from workers.gpt.config import ConfigError, GPTConfig, TrainConfig
from workers.gpt.train import device_peak_flops, get_lr, resolve_device, train
from tests.gpt.conftest import TINY


def tiny_train(**kwargs) -> TrainConfig:
    defaults = dict(batch_size=2, max_steps=10, learning_rate=1e-2, warmup_steps=2, min_lr=1e-3, eval_interval=5,
                    eval_iters=2, checkpoint_interval=0, device="cpu", seed=42)
    return TrainConfig(**{**defaults, **kwargs})


def random_tokens(n, vocab_size=64, seed=0):
    return torch.randint(vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def test_lr_warms_up_linearly_then_decays_on_a_cosine_to_min_lr():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_steps=10, lr_decay_steps=110, max_steps=200)
    assert get_lr(1, cfg) == pytest.approx(0.1)
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(60, cfg) == pytest.approx(0.55)  # halfway down the cosine
    assert get_lr(110, cfg) == pytest.approx(0.1)
    assert get_lr(150, cfg) == 0.1
    lrs = [get_lr(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_overfits_one_batch(cfg):
    # data exactly one block long: every batch is the same sequence, which a working model memorizes
    data = random_tokens(cfg.block_size + 1)
    losses = []
    train(cfg, tiny_train(max_steps=100, warmup_steps=10, weight_decay=0.0, eval_interval=1000, eval_iters=1),
          data, on_step=lambda r: losses.append(r["loss"]))
    assert losses[0] > 3.5  # about ln(64) = 4.16 at init
    assert losses[-1] < 0.05


def test_resuming_from_a_checkpoint_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    # dropout and gradient accumulation on, so the restored RNGs and AdamW state all matter
    model_cfg = GPTConfig(**{**TINY, "dropout": 0.1})
    train_cfg = tiny_train(max_steps=10, grad_accum=2, checkpoint_interval=5)
    data, val = random_tokens(500), random_tokens(200, seed=1)

    straight = []
    train(model_cfg, train_cfg, data, val, on_step=lambda r: straight.append(r["loss"]))

    first = []
    train(model_cfg, train_cfg, data, val, on_step=lambda r: first.append(r["loss"]),
          on_checkpoint=lambda s: save_train_state(tmp_path, s), should_stop=lambda: len(first) == 5)
    ckpt = load_checkpoint(tmp_path / "ckpt-000005.safetensors")
    assert ckpt.step == 5
    torch.manual_seed(1234)  # whatever happened to the global RNG in between must not matter
    second = []
    state = train(ckpt.model_cfg, train_cfg, data, val, resume=ckpt, on_step=lambda r: second.append(r["loss"]))

    assert first == straight[:5]
    assert second == straight[5:]  # bit for bit on CPU
    assert state.step == 10


def test_step_reports_carry_the_metrics_the_ui_plots(gpt2_cfg):
    reports = []
    train(gpt2_cfg, tiny_train(max_steps=3), random_tokens(100), on_step=reports.append)
    assert [r["step"] for r in reports] == [1, 2, 3]
    for r in reports:
        assert set(r) == {"step", "loss", "lr", "grad_norm", "ms", "tokens_per_s", "mfu"}
        assert r["ms"] > 0 and r["tokens_per_s"] > 0 and 0 < r["mfu"] < 10 and r["grad_norm"] > 0


def test_gradient_clipping_still_reports_the_unclipped_norm(gpt2_cfg):
    reports = []
    train(gpt2_cfg, tiny_train(max_steps=1, grad_clip=1e-6), random_tokens(100), on_step=reports.append)
    assert reports[0]["grad_norm"] > 1e-3


def test_evaluates_at_start_every_interval_and_at_the_end(gpt2_cfg):
    evals = []
    state = train(gpt2_cfg, tiny_train(max_steps=12, eval_interval=5), random_tokens(300), random_tokens(100, seed=1),
                  on_eval=evals.append)
    assert [e["step"] for e in evals] == [0, 5, 10, 12]
    assert all(e["train_loss"] > 0 and e["val_loss"] > 0 for e in evals)
    assert evals[0]["val_loss"] == pytest.approx(math.log(64), abs=0.3)
    assert state.val_loss == evals[-1]["val_loss"]
    assert state.best_val_loss == min(e["val_loss"] for e in evals)


def test_without_val_data_only_train_loss_is_estimated(gpt2_cfg):
    evals = []
    train(gpt2_cfg, tiny_train(max_steps=2), random_tokens(100), on_eval=evals.append)
    assert evals[-1]["val_loss"] is None and evals[-1]["train_loss"] > 0


def test_checkpoints_are_requested_every_interval_and_at_the_end(gpt2_cfg):
    steps = []
    train(gpt2_cfg, tiny_train(max_steps=7, checkpoint_interval=3), random_tokens(100),
          on_checkpoint=lambda s: steps.append(s.step))
    assert steps == [3, 6, 7]


def test_should_stop_ends_the_run_within_one_step(gpt2_cfg):
    reports = []
    state = train(gpt2_cfg, tiny_train(max_steps=50), random_tokens(100), on_step=reports.append,
                  should_stop=lambda: len(reports) >= 3)
    assert len(reports) == 3
    assert state.stopped and state.step == 3
    assert set(state.rng_state) >= {"torch", "data"}  # enough to save and resume


def test_the_same_seed_gives_the_same_run(gpt2_cfg):
    runs = []
    for _ in range(2):
        losses = []
        train(gpt2_cfg, tiny_train(max_steps=3), random_tokens(100), on_step=lambda r: losses.append(r["loss"]))
        runs.append(losses)
    assert runs[0] == runs[1]


def test_token_ids_beyond_the_vocabulary_are_reported(gpt2_cfg):
    with pytest.raises(ValueError, match="vocab_size is 64"):
        train(gpt2_cfg, tiny_train(max_steps=1, eval_iters=1), random_tokens(100, vocab_size=100), None)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-40GB", 312e12),
    ("NVIDIA A10G", 70e12),
    ("NVIDIA GeForce RTX 4090", 165e12),
])
def test_gpu_peak_flops_come_from_the_datasheet(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert device_peak_flops("cuda") == peak


def test_cpu_peak_flops_are_measured_once(monkeypatch):
    monkeypatch.setattr(train_module, "_measured_peak", {})
    calls = []
    monkeypatch.setattr(train_module, "_measure_matmul_flops", lambda device: calls.append(device) or 1e9)
    assert device_peak_flops("cpu") == 1e9 and device_peak_flops("cpu") == 1e9
    assert len(calls) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        resolve_device("cuda")
    assert e.value.field == "device" and "device='auto'" in str(e.value)


def test_validation_data_shorter_than_a_block_is_named(gpt2_cfg):
    with pytest.raises(ValueError, match="^val data: the data has 10 tokens"):
        train(gpt2_cfg, tiny_train(max_steps=1), random_tokens(100), random_tokens(10))
