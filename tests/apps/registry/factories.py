"""Registry models for tests: a tiny random Llama GGUF (with a trained byte-level BPE and ChatML) imported through
the same service a user's file goes through. Built once per session and copied, so each test imports in ~0.1 s."""

import functools
import shutil
import tempfile
from pathlib import Path

from apps.registry.models import Model
from apps.registry.services import model_import_file
from tests.gpt import formats


@functools.lru_cache(maxsize=None)
def _tiny_gguf(n_layer: int, n_embd: int, ctx: int) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="llmlab-tiny-gguf-"))
    return formats.write_tiny_gguf(directory / f"tiny-{n_layer}-{n_embd}-{ctx}.gguf", n_layer=n_layer, n_embd=n_embd,
                                   n_head=4, n_kv_head=2, inter=2 * n_embd, ctx=ctx)


def tiny_gguf(tmp_path: Path, *, n_layer: int = 2, n_embd: int = 32, ctx: int = 64) -> Path:
    """A fresh copy of the tiny GGUF in tmp_path (tests may damage it)."""
    target = tmp_path / f"tiny-{n_layer}-{n_embd}-{ctx}.gguf"
    shutil.copy(_tiny_gguf(n_layer, n_embd, ctx), target)
    return target


def make_model(tmp_path: Path, *, name: str = "Tiny", status: str = Model.Status.PUBLISHED, owner=None,
               n_layer: int = 2, n_embd: int = 32, ctx: int = 64) -> Model:
    return model_import_file(source=tiny_gguf(tmp_path, n_layer=n_layer, n_embd=n_embd, ctx=ctx), name=name,
                             status=status, owner=owner)
