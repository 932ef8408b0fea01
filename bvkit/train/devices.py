"""Where a run trains: the one place a device name is checked and resolved.

``check_device`` validates a name without importing torch (the study spec uses it);
``resolve_device`` turns a name into a ``torch.device``; ``gpu_count`` and ``spread_device``
decide how a study spreads runs over the visible GPUs; under torchrun ``resolve_device`` gives
each rank the GPU named by ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
import re

from bvkit.errors import BvkitError

DEVICE_NAMES = "auto, cpu, cuda, cuda:N"
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(name: object) -> str:
    """``name`` if it names a device bvkit can train on, else a ``BvkitError``."""
    if not isinstance(name, str) or not _DEVICE_PATTERN.match(name):
        raise BvkitError(f"unknown device {name!r} ({DEVICE_NAMES})")
    return name


def gpu_count() -> int:
    """Visible CUDA devices (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # the study layer may run where torch is absent
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def wants_gpu(name: str) -> bool:
    """Whether ``name`` asks for a GPU when one is there (``auto`` and the bare ``cuda``)."""
    return name in ("auto", "cuda")


def spread_device(name: str, index: int, n_gpus: int) -> str:
    """Run ``index``'s device when a study spreads ``auto``/``cuda`` runs over ``n_gpus`` GPUs."""
    return f"cuda:{index % n_gpus}" if n_gpus and wants_gpu(name) else name


def resolve_device(name="auto"):
    """``auto`` -> CUDA when present, else CPU; a CUDA request without CUDA is bad input; under
    torchrun a CUDA device becomes the rank's own (``LOCAL_RANK``)."""
    import torch

    if isinstance(name, torch.device):
        device = name
    else:
        name = check_device(name)
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BvkitError("--device cuda requested but CUDA is not available")
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device
