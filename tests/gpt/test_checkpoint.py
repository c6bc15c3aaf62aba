import json

import pytest
import torch
from safetensors import safe_open

from workers.gpt import checkpoint
from workers.gpt.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_model,
    rotate_checkpoints,
    save_checkpoint,
)
from workers.gpt.config import TrainConfig
from workers.gpt.model import GPT


def trained(cfg):
    """A model and an AdamW that has taken one step, so the optimizer has state to save."""
    model = GPT(cfg)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    idx = torch.randint(cfg.vocab_size, (2, cfg.block_size))
    model(idx, idx)[1].backward()
    opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_metadata(tmp_path, cfg):
    model, opt = trained(cfg)
    rng = {"torch": torch.get_rng_state().numpy().tobytes(), "data": b"\x00\x01\xff"}
    path = save_checkpoint(tmp_path, model=model, step=7, optimizer=opt, train_cfg=TrainConfig(max_steps=9),
                           tokenizer={"name": "gpt2", "id": 3}, losses={"train": 2.5, "val": 2.75},
                           data_position={"shard": 0, "offset": 128}, rng_state=rng)
    assert path == tmp_path / "ckpt-000007.safetensors"

    ckpt = load_checkpoint(path)
    assert ckpt.step == 7 and ckpt.model_cfg == cfg and ckpt.train_cfg == TrainConfig(max_steps=9)
    assert ckpt.tokenizer == {"name": "gpt2", "id": 3}
    assert ckpt.losses == {"train": 2.5, "val": 2.75}
    assert ckpt.data_position == {"shard": 0, "offset": 128}
    assert ckpt.rng_state == rng
    restored = ckpt.build_model()
    for (name, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name
    if cfg.tie_embeddings:
        assert restored.lm_head.weight is restored.transformer.wte.weight
    opt2 = restored.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    opt2.load_state_dict(ckpt.optimizer_state)
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd["param_groups"] == sd2["param_groups"]
    for i, st in sd["state"].items():
        for key, value in st.items():
            assert torch.equal(value, sd2["state"][i][key]), (i, key)


def test_loading_never_unpickles(tmp_path, gpt2_cfg, monkeypatch):
    model, opt = trained(gpt2_cfg)
    path = save_checkpoint(tmp_path, model=model, step=1, optimizer=opt)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", refuse)
    load_checkpoint(path)
    with safe_open(str(path), framework="pt") as f:  # plain safetensors, readable by any safetensors reader
        assert "model.transformer.wte.weight" in f.keys()
        assert "model.lm_head.weight" not in f.keys()  # tied: stored once


def test_a_crash_while_saving_leaves_no_checkpoint_behind(tmp_path, gpt2_cfg, monkeypatch):
    model, _ = trained(gpt2_cfg)
    save_checkpoint(tmp_path, model=model, step=1)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.json, "dumps", crash)  # fail after the tensors, before the sidecar
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model=model, step=2)
    assert list_checkpoints(tmp_path) == [tmp_path / "ckpt-000001.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(tmp_path).step == 1
    with pytest.raises(FileNotFoundError, match="never completely saved"):
        load_checkpoint(tmp_path / "ckpt-000002.safetensors")


def test_rotation_keeps_the_last_k_and_the_best_by_val_loss(tmp_path, gpt2_cfg):
    model = GPT(gpt2_cfg)
    val = {1: 3.0, 2: 1.5, 3: 2.0, 4: 2.5, 5: 2.6, 6: 2.7}
    for step, v in val.items():
        save_checkpoint(tmp_path, model=model, step=step, losses={"val": v})
    removed = rotate_checkpoints(tmp_path, keep_last=2, best_by_val=True)
    assert [p.name for p in removed] == [f"ckpt-00000{s}.safetensors" for s in (1, 3, 4)]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000002.safetensors", "ckpt-000005.safetensors",
                                                           "ckpt-000006.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"ckpt-{s:06d}.{ext}" for s in (2, 5, 6) for ext in ("json", "safetensors"))

    rotate_checkpoints(tmp_path, keep_last=1, best_by_val=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000006.safetensors"]


def test_loading_a_directory_takes_its_latest_checkpoint(tmp_path, gpt2_cfg):
    model = GPT(gpt2_cfg)
    for step in (5, 10, 100):
        save_checkpoint(tmp_path, model=model, step=step)
    assert load_checkpoint(tmp_path).step == 100
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "ckpt-000011.safetensors")


def test_load_model_gives_the_same_logits_without_optimizer_state(tmp_path, cfg):
    model, opt = trained(cfg)
    path = save_checkpoint(tmp_path, model=model, step=3, optimizer=opt)
    assert load_checkpoint(path, with_optimizer=False).optimizer_state is None
    loaded = load_model(path)
    assert not loaded.training
    # built on the meta device and given the stored tensors: nothing may be left behind there, ties stay ties
    assert all(t.device.type == "cpu" for t in [*loaded.parameters(), *loaded.buffers()])
    assert (loaded.lm_head.weight is loaded.transformer.wte.weight) == cfg.tie_embeddings
    idx = torch.randint(cfg.vocab_size, (1, cfg.block_size))
    torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)


def test_the_sidecar_is_plain_json_in_nanogpt_vocabulary(tmp_path, gpt2_cfg):
    path = save_checkpoint(tmp_path, model=GPT(gpt2_cfg), step=1, tokenizer="gpt2")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model_config"]["n_layer"] == 2 and meta["model_config"]["block_size"] == 16
    assert meta["tokenizer"] == "gpt2" and meta["step"] == 1
