import math

import pytest
import torch

import torch.nn.functional as F

from workers.gpt.checkpoint import load_checkpoint, save_train_state
from workers.gpt.config import ConfigError, GPTConfig, TrainConfig
from workers.gpt.config import flops_per_token
from workers.gpt.model import GPT
from workers.gpt.train import get_lr, resolve_device, train
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
    train(gpt2_cfg, tiny_train(max_steps=3), random_tokens(100), on_step=reports.append, peak_flops=1e9)
    assert [r["step"] for r in reports] == [1, 2, 3]  # every step on a CPU (log_interval None means 1 here)
    for r in reports:
        assert set(r) == {"step", "loss", "lr", "grad_norm", "ms", "tokens_per_s", "mfu"}
        assert r["ms"] > 0 and r["tokens_per_s"] > 0 and r["grad_norm"] > 0
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * flops_per_token(gpt2_cfg) / 1e9)


def test_without_a_peak_there_is_no_mfu(gpt2_cfg):
    reports = []
    train(gpt2_cfg, tiny_train(max_steps=1), random_tokens(100), on_step=reports.append)
    assert reports[0]["mfu"] is None


def test_log_interval_reports_every_n_steps_and_the_last_with_the_same_losses(gpt2_cfg):
    every, sparse = [], []
    train(gpt2_cfg, tiny_train(max_steps=7, eval_interval=100), random_tokens(100), on_step=every.append)
    train(gpt2_cfg, tiny_train(max_steps=7, eval_interval=100, log_interval=3), random_tokens(100),
          on_step=sparse.append)
    assert [r["step"] for r in sparse] == [3, 6, 7]
    assert [r["loss"] for r in sparse] == [every[s - 1]["loss"] for s in (3, 6, 7)]  # the same run, read less often
    assert all(r["ms"] > 0 for r in sparse)


def test_gradient_clipping_still_reports_the_unclipped_norm(gpt2_cfg):
    reports = []
    train(gpt2_cfg, tiny_train(max_steps=1, grad_clip=1e-6), random_tokens(100), on_step=reports.append)
    assert reports[0]["grad_norm"] > 1e-3


def test_evaluates_at_start_every_interval_and_at_the_end(gpt2_cfg):
    evals = []
    state = train(gpt2_cfg, tiny_train(max_steps=12, eval_interval=5), random_tokens(300), random_tokens(100, seed=1),
                  on_eval=lambda report, state: evals.append(report))
    assert [e["step"] for e in evals] == [0, 5, 10, 12]
    assert all(e["train_loss"] > 0 and e["val_loss"] > 0 for e in evals)
    assert evals[0]["val_loss"] == pytest.approx(math.log(64), abs=0.3)
    assert state.val_loss == evals[-1]["val_loss"]
    assert state.best_val_loss == min(e["val_loss"] for e in evals)


def test_without_val_data_only_train_loss_is_estimated(gpt2_cfg):
    evals = []
    train(gpt2_cfg, tiny_train(max_steps=2), random_tokens(100), on_eval=lambda report, state: evals.append(report))
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        resolve_device("cuda")
    assert e.value.field == "device" and "device='auto'" in str(e.value)


def test_validation_data_shorter_than_a_block_is_named(gpt2_cfg):
    with pytest.raises(ValueError, match="^val data: the data has 10 tokens"):
        train(gpt2_cfg, tiny_train(max_steps=1), random_tokens(100), random_tokens(10))


def test_on_eval_gets_the_state_whose_model_is_being_trained(gpt2_cfg):
    seen = []
    state = train(gpt2_cfg, tiny_train(max_steps=4, eval_interval=2), random_tokens(100),
                  on_eval=lambda report, s: seen.append((report["step"], s.step, s.model)))
    assert [(r, s) for r, s, _ in seen] == [(0, 0), (2, 2), (4, 4)]
    assert all(m is state.model for _, _, m in seen)


# -----------------------------------------------------------------------------
# fine-tuning: a prebuilt model and a batch_fn


def masked_batches(cfg, batch_size=2):
    """A batch_fn whose targets are -1 (no loss) on the first half of every sequence, as SFT masks a prompt."""
    data = random_tokens(400, seed=3)

    def batch_fn(split, generator):
        assert split in ("train", "val")
        ix = torch.randint(len(data) - cfg.block_size, (batch_size,), generator=generator).tolist()
        rows = torch.stack([data[i:i + cfg.block_size + 1] for i in ix])
        x, y = rows[:, :-1].clone(), rows[:, 1:].clone()  # (B, T) each
        batch_fn.unmasked = y.clone()
        y[:, :cfg.block_size // 2] = -1
        return x, y

    return batch_fn


def test_a_prebuilt_model_trains_only_its_parameters_that_require_grad(gpt2_cfg):
    torch.manual_seed(7)
    model = GPT(gpt2_cfg)
    for p in model.transformer.h[0].parameters():
        p.requires_grad_(False)  # a frozen block, as under LoRA: AdamW must not touch it (weight decay included)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and trained

    state = train(gpt2_cfg, tiny_train(max_steps=3), model=model, batch_fn=masked_batches(gpt2_cfg))
    assert state.model is model  # trained in place, not rebuilt from the seed
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())
    assert any(not torch.equal(after[n], p) for n, p in trained.items())


def test_with_a_batch_fn_the_loss_counts_only_unmasked_targets(gpt2_cfg):
    batch_fn = masked_batches(gpt2_cfg)
    torch.manual_seed(7)
    model = GPT(gpt2_cfg)
    # the step-0 estimate draws its batches from a generator seeded seed + 1: recompute it by hand
    cfg = tiny_train(max_steps=1, eval_iters=2)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    masked, full = [], []
    model.eval()
    with torch.no_grad():
        for _ in range(cfg.eval_iters):
            x, y = batch_fn("train", gen)
            logits, _ = model(x)
            keep = y != -1
            masked.append(F.cross_entropy(logits[keep], y[keep]).item())
            full.append(F.cross_entropy(logits.view(-1, logits.size(-1)), batch_fn.unmasked.view(-1)).item())
    evals = []
    train(gpt2_cfg, cfg, model=model, batch_fn=batch_fn, on_eval=lambda report, state: evals.append(report))
    assert evals[0]["train_loss"] == pytest.approx(sum(masked) / len(masked), rel=1e-5)
    assert evals[0]["train_loss"] != pytest.approx(sum(full) / len(full), rel=1e-3)  # the masked half was left out
    assert evals[0]["val_loss"] is not None  # a batch_fn answers for both splits


def test_a_batch_fn_run_resumes_like_an_uninterrupted_one(tmp_path, gpt2_cfg):
    model_cfg = GPTConfig(**{**TINY, "dropout": 0.1})
    train_cfg = tiny_train(max_steps=6, checkpoint_interval=3)
    batch_fn = masked_batches(model_cfg)
    straight = []
    train(model_cfg, train_cfg, batch_fn=batch_fn, on_step=lambda r: straight.append(r["loss"]))
    first = []
    train(model_cfg, train_cfg, batch_fn=batch_fn, on_step=lambda r: first.append(r["loss"]),
          on_checkpoint=lambda s: save_train_state(tmp_path, s), should_stop=lambda: len(first) == 3)
    second = []
    train(model_cfg, train_cfg, batch_fn=batch_fn, resume=load_checkpoint(tmp_path / "ckpt-000003.safetensors"),
          on_step=lambda r: second.append(r["loss"]))
    assert first + second == straight


def test_without_data_or_batch_fn_train_says_what_it_needs(gpt2_cfg):
    with pytest.raises(ValueError, match="needs train_data"):
        train(gpt2_cfg, tiny_train(max_steps=1))
