"""
Token shards on disk, read back as numpy memmaps, and random training batches from them (as nanoGPT's train.py).

File format (one shard = one file, conventionally named *.tokens): a 24-byte little-endian header, then the token
ids as a flat array of uint16 (vocab_size <= 65536) or uint32.

    offset 0   8 bytes   magic b"LLMTOKS\\0"
    offset 8   uint32    format version (1)
    offset 12  uint32    bytes per token: 2 (uint16) or 4 (uint32)
    offset 16  uint64    number of tokens
    offset 24  tokens

The header makes a shard self-describing (no sidecar to lose, no dtype guessed from a file name) and lets a
truncated file be detected. Files are written under a temporary name and renamed into place, so a reader never sees
half a shard.
"""

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from .fileio import fsync_dir

MAGIC = b"LLMTOKS\0"
VERSION = 1
HEADER = struct.Struct("<8sIIQ")  # magic, version, itemsize, count
DTYPES = {2: np.dtype(np.uint16), 4: np.dtype(np.uint32)}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a vocabulary: uint16 up to 65536 entries, else uint32."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size ({vocab_size}) must be >= 1")
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size ({vocab_size}) does not fit in uint32")


class TokenWriter:
    """Stream token ids into a shard chunk by chunk, so a large corpus never has to sit in memory at once.

        with TokenWriter(path, np.uint16) as w:
            for ids in chunks:
                w.write(ids)

    The shard appears at `path` only when the block exits without an exception.
    """

    def __init__(self, path, dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        if self.dtype.itemsize not in DTYPES or self.dtype.kind != "u":
            raise ValueError(f"dtype {self.dtype} is not supported: use np.uint16 or np.uint32 (see dtype_for_vocab)")
        self.count = 0
        self._file = None
        self._tmp = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._file = os.fdopen(fd, "wb")
        self._file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, 0))  # count is filled in on close
        return self

    def write(self, ids):
        arr = np.asarray(ids)
        if arr.size == 0:
            return
        if arr.dtype.kind not in "iu":
            raise ValueError(f"token ids must be integers, got dtype {arr.dtype}")
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > np.iinfo(self.dtype).max:
            raise ValueError(f"token id {low if low < 0 else high} does not fit in {self.dtype}: "
                             f"use dtype_for_vocab(vocab_size) to pick the dtype")
        self._file.write(arr.astype(self.dtype, copy=False).reshape(-1).tobytes())
        self.count += arr.size

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._file.seek(0)
                self._file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self.count))
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
                fsync_dir(self.path.parent)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
        return False


def write_tokens(path, ids, dtype) -> Path:
    """Write token ids (any 1-D integer array-like) to a shard at `path`, atomically. Returns the path."""
    with TokenWriter(path, dtype) as w:
        w.write(ids)
    return w.path


def open_tokens(path) -> np.memmap:
    """Open a shard read-only as a 1-D memmap of uint16 or uint32 ids; nothing is read until it is indexed."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size or head[:8] != MAGIC:
        raise ValueError(f"{path} is not a token shard (no {MAGIC!r} header): write it with write_tokens()")
    _, version, itemsize, count = HEADER.unpack(head)
    if version != VERSION or itemsize not in DTYPES:
        raise ValueError(f"{path}: unsupported shard version {version} / itemsize {itemsize}")
    expected = HEADER.size + count * itemsize
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path} is {size} bytes but its header promises {count} tokens ({expected} bytes): "
                         f"the file is truncated or corrupt, write it again")
    if count == 0:
        return np.memmap(path, dtype=DTYPES[itemsize], mode="r", offset=0, shape=(0,))  # mmap cannot map 0 bytes
    return np.memmap(path, dtype=DTYPES[itemsize], mode="r", offset=HEADER.size, shape=(count,))


def get_batch(data, batch_size: int, block_size: int, generator: torch.Generator | None = None, device="cpu"):
    """Sample batch_size random windows of block_size + 1 tokens: inputs x and next-token targets y, each
    (batch_size, block_size) int64 on `device`. `data` is a 1-D memmap/array/tensor of ids; `generator` makes the
    choice of windows reproducible."""
    n = len(data)
    if n <= block_size:
        raise ValueError(f"the data has {n} tokens but block_size={block_size} needs at least {block_size + 1}: "
                         f"use a smaller block_size or more data")
    ix = torch.randint(n - block_size, (batch_size,), generator=generator).tolist()
    if isinstance(data, torch.Tensor):
        rows = torch.stack([data[i:i + block_size + 1].long() for i in ix])
    else:
        rows = torch.from_numpy(np.stack([np.asarray(data[i:i + block_size + 1], dtype=np.int64) for i in ix]))
    x, y = rows[:, :-1], rows[:, 1:]  # (B, T) each
    if torch.device(device).type == "cuda":
        # pin so the host-to-device copy can overlap with compute (non_blocking)
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


def unigram_loss(train_ids, val_ids, vocab_size: int, *, max_tokens: int = 5_000_000) -> float:
    """The validation loss (mean negative log-likelihood, nats) of a model that knows only how often each token
    occurs in the training split: the first thing a language model learns, and the line it must go well below before
    its samples look like words. Counts are add-one smoothed (a token unseen in training still gets a probability);
    at most max_tokens of each split are read, which pins the figure to a few thousandths."""
    counts = np.bincount(np.asarray(train_ids[:max_tokens], dtype=np.int64), minlength=vocab_size)[:vocab_size] + 1
    log_p = np.log(counts) - np.log(counts.sum())
    val = np.asarray(val_ids[:max_tokens], dtype=np.int64)
    return float(-log_p[val].mean()) if len(val) else float("nan")
