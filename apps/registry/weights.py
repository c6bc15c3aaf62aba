"""A model's weights, handled with the standard library only (the web process never imports torch).

A promoted model keeps only the weights of its run's checkpoint: safetensors is a length-prefixed JSON header plus
raw bytes, so copying the "model.*" tensors and dropping the optimizer's "optim.*" ones is header surgery and byte
copying, with no tensor library at all. Where files live and how they are written: apps.system.files.
"""

from __future__ import annotations

import json
from pathlib import Path

from apps.system.files import write_atomic
from workers.gpt.formats import ImportRefused
from workers.gpt.formats.safetensors import read_safetensors_header


class WeightsFileError(ValueError):
    """A weights file is not what it claims to be (truncated, not safetensors)."""


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file and the offset its data starts at; refuses a truncated file."""
    try:
        header, offset = read_safetensors_header(path)
    except ImportRefused as exc:
        raise WeightsFileError(str(exc)) from None
    data_size = path.stat().st_size - offset
    for name, info in header.items():
        if name != "__metadata__" and info["data_offsets"][1] > data_size:
            raise WeightsFileError(f"{path.name} is truncated: {name} lies past the end of the file")
    return header, offset


def copy_tensors(src: Path, dst: Path, *, keep=lambda name: True) -> None:
    """Write the tensors of src whose names pass `keep` into dst (a new safetensors file), atomically."""
    header, start = read_header(src)
    metadata = header.pop("__metadata__", None)
    kept = sorted((name for name in header if keep(name)), key=lambda name: header[name]["data_offsets"][0])
    out_header, offset = {}, 0
    for name in kept:
        begin, end = header[name]["data_offsets"]
        out_header[name] = {**header[name], "data_offsets": [offset, offset + end - begin]}
        offset += end - begin
    if metadata is not None:
        out_header["__metadata__"] = metadata
    raw = json.dumps(out_header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes so tensors stay aligned

    def write(f):
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        with open(src, "rb") as s:
            for name in kept:
                begin, end = header[name]["data_offsets"]
                s.seek(start + begin)
                remaining = end - begin
                while remaining:
                    block = s.read(min(remaining, 1 << 20))
                    if not block:
                        raise WeightsFileError(f"{src.name} ended early while copying {name}")
                    f.write(block)
                    remaining -= len(block)

    write_atomic(dst, write)


# peft's names for the pieces of an adapted Linear `X` (adapter "default", as sft.apply_lora injects it):
# X.base_layer.weight / .bias (the frozen Linear), X.lora_A.default.weight (r, in), X.lora_B.default.weight (out, r)
LORA_A, LORA_B, BASE_LAYER = ".lora_A.default.weight", ".lora_B.default.weight", ".base_layer."


def merge_lora_tensors(src: Path, dst: Path, *, scale: float, keep=lambda name: True) -> dict[str, str]:
    """Write the tensors of src that pass `keep` into dst with every LoRA adapter folded into its Linear,
    W <- W + scale * B @ A (scale = alpha / r), as peft's merge does (workers.gpt.sft.merge_lora: a test checks they
    agree), and the base layer's names put back (X.base_layer.weight -> X.weight). NumPy only: a fine-tuning run's
    checkpoint is promoted by the web process. Returns the renames, so the sidecar's aliases can follow them."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save

    read_header(src)  # refuses a truncated file with its name
    tensors, metadata = {}, None
    with safe_open(str(src), framework="np") as f:
        metadata = f.metadata()
        for name in f.keys():
            if keep(name):
                tensors[name] = f.get_tensor(name)
    for name in [n for n in tensors if n.endswith(LORA_A)]:
        stem = name[: -len(LORA_A)]
        a, b, w = tensors.pop(name), tensors.pop(stem + LORA_B, None), tensors.get(stem + ".base_layer.weight")
        if b is None or w is None:
            raise WeightsFileError(f"{src.name}: the LoRA adapter of {stem} is incomplete (no lora_B or base layer)")
        if w.dtype != np.float32:
            raise WeightsFileError(f"{src.name}: {stem} is {w.dtype}, but merging LoRA here needs float32 weights")
        tensors[stem + ".base_layer.weight"] = (w + np.float32(scale) * (b @ a)).astype(np.float32)
    stray = [n for n in tensors if ".lora_" in n]
    if stray:
        raise WeightsFileError(f"{src.name}: LoRA tensors of another adapter than 'default' ({stray[0]}) cannot be "
                               f"merged")
    renames = {n: n.replace(BASE_LAYER, ".") for n in tensors if BASE_LAYER in n}
    tensors = {renames.get(n, n): t for n, t in tensors.items()}
    write_atomic(dst, save(tensors, metadata=metadata))
    return renames
