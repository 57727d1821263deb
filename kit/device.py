"""Where the work runs: `auto` (the GPU when torch sees one, else the CPU), `cpu` or `cuda`."""

from __future__ import annotations

import os

import torch

from kit.errors import KitError

CHOICES = ("auto", "cpu", "cuda")


def resolve(name: str = "auto") -> torch.device:
    """The torch device for `name`; asking for CUDA where torch sees no GPU is refused with the reason."""
    if name not in CHOICES:
        raise KitError(f"device {name!r} is not one of {', '.join(CHOICES)}")
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"a CUDA {torch.version.cuda} build"
        raise KitError(f"DEVICE=cuda, but torch ({torch.__version__}, {build}) sees no GPU "
                       "(check nvidia-smi and CUDA_VISIBLE_DEVICES); use DEVICE=auto or DEVICE=cpu")
    return torch.device(name)


def describe(device: torch.device) -> str:
    """A human name for reports: the GPU's model, or the CPU with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
