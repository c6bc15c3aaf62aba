import re
import subprocess
import sys
from pathlib import Path

import pytest

from workers.gpt.config import (
    ConfigError,
    GPTConfig,
    TrainConfig,
    devices_fit_error,
    flops_per_token,
    memory_estimate,
    memory_estimate_bytes,
    param_count,
)

ROOT = Path(__file__).resolve().parents[2]


def test_config_module_imports_no_torch():
    # the web process validates configs with this module and must not pay for (or need) torch
    code = "import sys, workers.gpt.config; assert 'torch' not in sys.modules, 'config imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_indivisible_n_embd_names_the_field_and_suggests_values():
    with pytest.raises(ConfigError) as e:
        GPTConfig(n_embd=100, n_head=3)
    assert e.value.field == "n_embd"
    assert str(e.value) == "n_embd (100) must be divisible by n_head (3): try n_embd=96 or 102"


def test_n_kv_head_must_divide_n_head():
    with pytest.raises(ConfigError) as e:
        GPTConfig(n_head=4, n_embd=32, n_kv_head=3)
    assert e.value.field == "n_kv_head"
    assert "n_kv_head (3)" in str(e.value) and "[1, 2, 4]" in str(e.value)


def test_rope_needs_an_even_head_size():
    with pytest.raises(ConfigError) as e:
        GPTConfig(n_head=2, n_embd=34, pos="rope")
    assert e.value.field == "n_embd"
    assert "try n_embd=36" in str(e.value)


def test_unknown_choice_lists_the_options():
    with pytest.raises(ConfigError) as e:
        GPTConfig(norm="batchnorm")
    assert e.value.field == "norm"
    assert "'layernorm'" in str(e.value) and "'rmsnorm'" in str(e.value)


@pytest.mark.parametrize("value", ["4", True, 4.0])
def test_wrong_type_is_rejected_naming_the_field(value):
    with pytest.raises(ConfigError) as e:
        GPTConfig(n_layer=value)
    assert e.value.field == "n_layer"
    assert "n_layer must be int" in str(e.value)


def test_int_is_accepted_for_a_float_field():
    cfg = TrainConfig(learning_rate=1, min_lr=0)
    assert isinstance(cfg.learning_rate, float) and isinstance(cfg.min_lr, float)


def test_derived_values_are_filled_in():
    cfg = GPTConfig(n_head=4, n_embd=64)
    assert cfg.head_size == 16
    assert cfg.n_kv_head == 4
    assert cfg.intermediate_size == 256
    assert GPTConfig(n_embd=48, n_head=4, mlp="swiglu").intermediate_size == 128  # 8/3 * 48 = 128
    assert TrainConfig(max_steps=500).lr_decay_steps == 500


def test_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(ConfigError) as e:
        GPTConfig.from_dict({"n_layer": 2, "n_layers": 3, "heads": 2})
    assert e.value.field == "heads"
    assert "'heads', 'n_layers'" in str(e.value)


@pytest.mark.parametrize("cls", [GPTConfig, TrainConfig])
def test_to_dict_from_dict_round_trips(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs, field", [
    (dict(min_lr=1e-3, learning_rate=1e-4), "min_lr"),
    (dict(warmup_steps=100, lr_decay_steps=50), "lr_decay_steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(beta2=1.0), "beta2"),
    (dict(device="tpu"), "device"),
    (dict(dtype="int8"), "dtype"),
    (dict(learning_rate=0.0), "learning_rate"),
])
def test_train_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert e.value.field == field
    assert field in str(e.value)


def test_param_count_of_the_default_is_gpt2_small():
    # the well-known 124M of GPT-2 small (nanoGPT prints 124.44M for the 50257-token vocabulary)
    assert param_count(GPTConfig(vocab_size=50257)) == 124_439_808


def test_flops_per_token_is_6n_plus_attention():
    cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
    n = param_count(cfg) - cfg.block_size * cfg.n_embd  # without position embeddings, like nanoGPT
    assert flops_per_token(cfg) == 6 * n + 12 * 2 * 32 * 16


def test_memory_estimate_counts_adamw_states_and_grows_with_batch():
    gpt = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
    parts = memory_estimate(gpt, TrainConfig(batch_size=4))
    assert parts["weights"] == parts["grads"] == 4 * param_count(gpt)
    assert parts["optimizer"] == 8 * param_count(gpt)
    assert memory_estimate_bytes(gpt, TrainConfig(batch_size=8)) > memory_estimate_bytes(gpt, TrainConfig(batch_size=4))


def test_log_interval_is_optional_and_at_least_one():
    assert TrainConfig().log_interval is None  # the device decides: every step on a CPU, every 10th on CUDA
    assert TrainConfig(log_interval=5).log_interval == 5
    with pytest.raises(ConfigError) as e:
        TrainConfig(log_interval=0)
    assert e.value.field == "log_interval"


# -----------------------------------------------------------------------------
# does it fit: one wording for the form and the worker


def test_a_block_longer_than_a_split_names_block_size_and_a_size_that_fits():
    from workers.gpt.config import split_fit_error

    assert split_fit_error(64, {"validation": 65, "training": 1000}) is None  # 64 + 1 tokens are enough
    error = split_fit_error(64, {"validation": 64, "training": 1000}, of="of Tiny with tiny-char")
    assert error.field == "block_size"
    assert str(error).startswith("block_size (64) is larger than the validation split (64 tokens of Tiny with "
                                 "tiny-char): each sample needs block_size + 1 tokens. Use block_size=32 or less")
    assert "(about 10 tokens)" in str(split_fit_error(64, {"validation": None, "training": 10}, approx=True))


def test_memory_that_does_not_fit_names_the_part_that_dominates():
    from workers.gpt.config import memory_estimate_bytes, memory_fit_error

    big = GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=64)
    small_batch = TrainConfig(batch_size=1)
    assert memory_fit_error(big, small_batch, memory_bytes=None) is None  # unknown memory: nothing to check
    assert memory_fit_error(big, small_batch, memory_bytes=10 * memory_estimate_bytes(big, small_batch)) is None
    error = memory_fit_error(big, small_batch, memory_bytes=2**30, device="the device of train@box")
    assert error.field == "n_embd" and "but the device of train@box has 1.0 GiB" in str(error)
    tiny = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
    error = memory_fit_error(tiny, TrainConfig(batch_size=100_000), memory_bytes=2**30)
    assert error.field == "batch_size" and "reduce batch_size or block_size" in str(error)


def test_a_character_tokenizer_missing_characters_of_a_corpus_lists_them():
    from workers.gpt.config import missing_chars_error

    assert missing_chars_error(tokenizer="abc", corpus="Tiny", alphabet="cab", chars="abcd") is None
    message = missing_chars_error(tokenizer="abc", corpus="Song", alphabet="abcχ!", chars="abc")
    assert message.startswith("abc has no id for 2 character(s) of Song ('!' 'χ'): choose Song's own character")


def test_a_worker_refuses_devices_it_does_not_have_naming_what_it_has():
    gpus = {"kind": "cuda", "count": 2, "cores": 32}
    assert devices_fit_error(TrainConfig(devices=2, batch_size=4), gpus, where="train@gpu") is None
    assert devices_fit_error(TrainConfig(devices=2, batch_size=4, device_ids="1,0"), gpus, where="train@gpu") is None
    more = devices_fit_error(TrainConfig(devices=4, batch_size=4), gpus, where="train@gpu")
    assert more.field == "devices"
    assert str(more) == "devices (4) is more than the 2 GPU(s) of train@gpu: ask for at most 2"
    absent = devices_fit_error(TrainConfig(devices=2, batch_size=4, device_ids="0,3"), gpus, where="train@gpu")
    assert absent.field == "device_ids" and "GPU 3 is not there: choose among 0..1" in str(absent)
    cpu = {"kind": "cpu", "count": 1, "cores": 2}
    assert devices_fit_error(TrainConfig(devices=4, batch_size=4), cpu, where="train@cpu") is None  # processes: slow
    assert "computes on CPU" in str(devices_fit_error(TrainConfig(device_ids="0"), cpu, where="train@cpu"))


@pytest.mark.parametrize("ids, words", [("0,0", "names GPU 0 twice"),
                                        ("0;1", "must be GPU numbers separated by commas"),
                                        ("2", "names 1 GPU(s) but devices is 2")])
def test_which_devices_must_be_distinct_gpu_numbers_one_per_device(ids, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as e:
        TrainConfig(devices=2, batch_size=4, device_ids=ids)
    assert e.value.field == "device_ids"

