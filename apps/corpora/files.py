"""Files under ARTIFACTS_DIR, written so that a reader never sees half of one: write a temporary name, fsync, rename."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.conf import settings

from workers.gpt.fileio import atomic_write_bytes


def artifacts() -> Path:
    return Path(settings.ARTIFACTS_DIR)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write data to path atomically (a crash leaves either the old file or none, never a partial one)."""
    return atomic_write_bytes(path, data)


def remove(path: Path) -> None:
    """Remove a file or a directory tree if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden directory beside where a result will land (same filesystem, so the final rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}-", suffix=".tmp", dir=parent))
