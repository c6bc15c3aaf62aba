"""What this worker computes on: the CUDA GPU (name, memory), Apple's MPS, or the CPU (model, cores).

Imports torch (inside the functions, so importing the module is cheap), so only worker processes call it.
"""

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device() -> dict:
    import torch

    info = {"torch": torch.__version__, "cpu": cpu_model(), "cores": os.cpu_count() or 1}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "kind": "cuda",
            "name": props.name,
            "memory_bytes": props.total_memory,
            "count": torch.cuda.device_count(),
        }
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        info |= {"kind": "mps", "name": "Apple GPU (MPS)", "memory_bytes": None, "count": 1}
    else:
        info |= {"kind": "cpu", "name": info["cpu"], "memory_bytes": _total_memory(), "count": 1}
    return info


def _total_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------------------------------------------------
# peak FLOP/s, the denominator of MFU: measured (or looked up) once per process, then passed to train(peak_flops=...)

# dense bf16 tensor-core FLOP/s from NVIDIA datasheets (fp16 for GPUs without bf16; no sparsity). The first key found
# in the device name wins, so the more specific names come first ("H100 PCIe" before "H100", "L40S" before "L4").
PEAK_FLOPS = [
    ("B200", 2250e12),
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("GH200", 989e12),
    ("A100", 312e12),  # SXM and PCIe alike
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 6000 Ada", 364e12),
    ("RTX A6000", 155e12),
    ("RTX 5090", 210e12),
    ("RTX 4090", 165e12),
    ("RTX 4080", 97e12),
    ("RTX 3090", 71e12),
    ("RTX 3080", 60e12),
    ("V100", 125e12),
    ("T4", 65e12),
]
_peaks: dict[str, float] = {}


def datasheet_peak_flops(name: str) -> float | None:
    """The datasheet's dense bf16 peak for a CUDA device name, or None for a device not in the table."""
    for key, flops in PEAK_FLOPS:
        if key in name:
            return flops
    return None


def peak_flops(kind: str) -> float:
    """Peak FLOP/s of this worker's device of `kind` ("cuda", "mps", "cpu"), once per process: a CUDA GPU's datasheet
    figure, else the best of many large matmuls (a few small products swing by 10x on a busy machine, which made
    MFU read above 100 %)."""
    if kind not in _peaks:
        import torch

        found = datasheet_peak_flops(torch.cuda.get_device_name(0)) if kind == "cuda" else None
        _peaks[kind] = found or measure_matmul_flops(kind)
    return _peaks[kind]


def measure_matmul_flops(kind: str, n: int = 1024, reps: int = 12) -> float:
    """Best FLOP/s of an n x n matmul (float32 on the CPU, bf16 on a GPU): a practical peak where no datasheet
    says. Constant operands: random ones would advance the global RNG and change a seeded run."""
    import time

    import torch

    device = torch.device(kind)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a = torch.full((n, n), 0.5, device=device, dtype=dtype)
    b = torch.full((n, n), 0.25, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 2):  # two rounds warm up
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
