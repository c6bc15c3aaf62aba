"""What this worker computes on: the CUDA GPU (name, memory), Apple's MPS, or the CPU (model, cores).

Imports torch, so only worker processes call it.
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
