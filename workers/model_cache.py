"""The infer worker's warm models: loaded once, shared by generation and the explorer, bounded by memory.

    spec = model_spec(registry_row)                       # or LoadSpec(path=..., version=..., tokenizer={...})
    loaded, warm = model_cache.get(spec)                  # loaded.model (GPT, eval mode), loaded.tokenizer

A LoadSpec says what to load, not which row asked: the weights file, a version that changes whenever the weights do
(a registry model's sha256, a checkpoint's size and mtime), and the tokenizer's spec as rows and sidecars hold it
({"kind", "name", "path", "fingerprint"}). Its model config is not part of it: the sidecar beside the weights holds
the config, and a second copy could only disagree with it. Two specs for the same file and version (a registry
model opened for generation and for the explorer) are one entry, so SmolLM2 loaded for one is warm for the other.

Thread-safe: the infer worker runs four threads which share the cache, and two requests for the same cold model
load it once (the second waits for the first).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from django.conf import settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadSpec:
    """What to load: the cache keys on (path, version, tokenizer); the label only names it in logs and errors."""
    path: str  # the checkpoint's .safetensors file
    version: str  # changes whenever the weights do: replaced weights are never served stale
    tokenizer: dict = field(default_factory=dict, compare=False)  # {"kind", "name", "path", "fingerprint"}
    label: str = field(default="", compare=False)  # for the log and error messages

    @property
    def key(self) -> tuple[str, str, str]:
        return (str(self.path), self.version, json.dumps(self.tokenizer, sort_keys=True))


def model_spec(model) -> LoadSpec:
    """The LoadSpec of a registry model (apps.registry.models.Model)."""
    return LoadSpec(path=str(model.file), version=model.sha256, tokenizer=model.tokenizer_spec or {}, label=model.name)


@dataclass
class Loaded:
    model: object  # workers.gpt.model.GPT, in eval mode
    tokenizer: object  # workers.gpt.tokenizers.Tokenizer
    nbytes: int
    load_ms: float
    pieces: dict = field(default_factory=dict)  # token id -> how the page shows it alone (alternatives repeat a lot)


class ModelCache:
    """Models kept loaded, least recently used evicted first once they hold more than max_bytes
    (INFERENCE_CACHE_BYTES unless given)."""

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self.items: OrderedDict[tuple, Loaded] = OrderedDict()
        self.lock = threading.Lock()
        self.loading: dict[tuple, threading.Lock] = {}

    def limit(self) -> int:
        return self.max_bytes if self.max_bytes is not None else settings.INFERENCE_CACHE_BYTES

    def has(self, spec: LoadSpec) -> bool:
        with self.lock:
            return spec.key in self.items

    def get(self, spec: LoadSpec) -> tuple[Loaded, bool]:
        """(the loaded model, whether it was warm)."""
        key = spec.key
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key], True
            gate = self.loading.setdefault(key, threading.Lock())
        with gate:  # one thread loads; the others wait here and then find it cached
            with self.lock:
                if key in self.items:
                    self.items.move_to_end(key)
                    return self.items[key], True
            from workers.gpt.checkpoint import load_model

            configure_torch_threads()
            started = time.perf_counter()
            model = load_model(spec.path)
            tokenizer = _tokenizer(spec)
            nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
            loaded = Loaded(model=model, tokenizer=tokenizer, nbytes=nbytes,
                            load_ms=(time.perf_counter() - started) * 1000)
            with self.lock:
                self.items[key] = loaded
                self.loading.pop(key, None)
                self._evict(keep=key)
            log.info("loaded model %s (%.0f MB) in %.0f ms", spec.label or spec.path, nbytes / 1e6, loaded.load_ms)
            return loaded, False

    def _evict(self, keep: tuple) -> None:
        """Drop the least recently used models until the rest fit (the one just loaded always stays; a generation
        still using an evicted model keeps its own reference until it ends)."""
        limit = self.limit()
        while sum(item.nbytes for item in self.items.values()) > limit and len(self.items) > 1:
            oldest = next(k for k in self.items if k != keep)
            del self.items[oldest]

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


def _tokenizer(spec: LoadSpec):
    from apps.tokenization.selectors import tokenizer_from_spec
    from workers.gpt.tokenizers import TokenizerError

    if not spec.tokenizer:
        raise TokenizerError(f"{spec.label or spec.path} has no tokenizer recorded, so text cannot be encoded for it")
    return tokenizer_from_spec(spec=spec.tokenizer)


_threads_set = False


def configure_torch_threads() -> int:
    """Set the infer worker's torch threads once (INFERENCE_TORCH_THREADS, default every core): concurrent
    generations of one model share a single batched forward per step (workers/batching.py), so the cores go to
    that one forward instead of being split among threads."""
    global _threads_set
    import torch

    if not _threads_set:
        torch.set_num_threads(settings.INFERENCE_TORCH_THREADS)
        _threads_set = True
    return torch.get_num_threads()


model_cache = ModelCache()
