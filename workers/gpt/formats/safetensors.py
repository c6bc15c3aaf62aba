"""safetensors files read and written with numpy, without torch (and bfloat16 by hand: numpy has no such dtype).

    header, data_offset = read_safetensors_header(path)     # the JSON header (+ __metadata__); checks it is sane
    tensors, metadata = read_safetensors(path)              # every tensor as float32, each checked to lie in the file
    write_safetensors(path, tensors, metadata={"k": "v"})   # float32, atomically
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..fileio import atomic_write
from .imported import ImportRefused


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}
_MAX_HEADER = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file (with its __metadata__) and the offset its data starts at; refuses a
    file that is too short, not safetensors, or has a corrupt header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ImportRefused(f"{path.name} is too short to be a safetensors file")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= min(_MAX_HEADER, size - 8):
            raise ImportRefused(f"{path.name} is not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise ImportRefused(f"{path.name}: the safetensors header is not valid JSON: the file is corrupt") from None
    if not isinstance(header, dict):
        raise ImportRefused(f"{path.name}: the safetensors header is not a JSON object")
    return header, 8 + n


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """All tensors of a .safetensors file as float32 numpy arrays, and its metadata. Checks the header and that every
    tensor lies inside the file, so a truncated or corrupt file is refused with the reason."""
    path = Path(path)
    header, offset = read_safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    size = path.stat().st_size
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=offset) if size > offset else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ImportRefused(f"{path.name}: the header entry of {name} is malformed") from None
        if dtype not in _ST_DTYPES:
            raise ImportRefused(f"{path.name}: tensor {name} has dtype {dtype}; LLM Lab reads F32, F16, BF16 and F64")
        itemsize = np.dtype(_ST_DTYPES[dtype]).itemsize
        count = int(np.prod(shape)) if shape else 1
        if not 0 <= start <= end or end - start != count * itemsize:
            raise ImportRefused(f"{path.name}: tensor {name} has offsets {start}..{end} for {count} {dtype} values")
        if end > data.size:
            raise ImportRefused(f"{path.name} is truncated: tensor {name} ends at byte {end} of the data, the file "
                                f"holds {data.size}")
        raw = np.frombuffer(data[start:end], dtype=_ST_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)  # bfloat16 is the top half of a float32
        tensors[name] = raw.astype(np.float32)
    return tensors, metadata


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write float32 tensors as .safetensors, atomically (temporary name, fsync, rename)."""
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))
