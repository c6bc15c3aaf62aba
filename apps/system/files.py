"""Files under ARTIFACTS_DIR, for every app: where they live, and writes that a reader never sees half of.

Rows store paths relative to ARTIFACTS_DIR (so the folder can move, or be shared by machines that mount it
elsewhere); `artifact_path` turns one into a file and `artifact_relative` back. Every write is atomic (a temporary
name in the same folder, fsync, rename: workers/gpt/fileio.py, which the workers use too), and a result made of
several files is built in a `temp_dir` beside where it lands and renamed into place whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from django.conf import settings

from workers.gpt.fileio import atomic_write, sha256_file

__all__ = ["artifact_path", "artifact_relative", "write_atomic", "write_json", "temp_dir", "remove", "tree_size",
           "sha256_file"]


def artifact_path(*parts: str | os.PathLike) -> Path:
    """ARTIFACTS_DIR joined with `parts` (a row's relative path, or pieces such as "models", 12)."""
    return Path(settings.ARTIFACTS_DIR).joinpath(*map(str, parts))


def artifact_relative(path: str | os.PathLike) -> str:
    """What a row stores for a file under ARTIFACTS_DIR: its path relative to it."""
    return os.path.relpath(path, settings.ARTIFACTS_DIR)


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Make `path` hold `data` (bytes, or a function that writes to the open file), atomically: a crash leaves the
    old file or none, never part of the new one."""

    def fill(tmp):
        with open(tmp, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                data(f)

    return atomic_write(path, fill)


def write_json(path: Path, data: dict) -> Path:
    return write_atomic(path, json.dumps(data, indent=1).encode())


def temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden directory beside where a result will land (same filesystem, so the final rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}-", suffix=".tmp", dir=parent))


def remove(path: Path) -> None:
    """Remove a file or a directory tree if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def tree_size(path: Path) -> int:
    """Bytes in all the files under a directory."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
