"""Tiny model configs shared by the tests/gpt tests: small enough that the whole suite runs in seconds on a CPU."""

import pytest
import torch

from workers.gpt.config import GPTConfig

TINY = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)
# everything the block-style fields can switch on at once: RMSNorm, RoPE, SwiGLU, grouped-query attention, no bias
LLAMA = dict(norm="rmsnorm", pos="rope", mlp="swiglu", n_head=4, n_kv_head=2, bias=False, tie_embeddings=False)


@pytest.fixture
def gpt2_cfg():
    return GPTConfig(**TINY)


@pytest.fixture
def llama_cfg():
    return GPTConfig(**{**TINY, **LLAMA})


@pytest.fixture(params=["gpt2", "llama"])
def cfg(request):
    """Each test that takes `cfg` runs once per block style."""
    return GPTConfig(**TINY) if request.param == "gpt2" else GPTConfig(**{**TINY, **LLAMA})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    # tiny matmuls gain nothing from threads, and on a shared CPU a second thread spin-waiting for a busy core made
    # these tests ten times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
