"""Where a run trains: the one place a device name is checked and resolved.

``check_device`` validates a name without importing torch (the study spec uses it);
``resolve_device`` turns a name into a ``torch.device``; ``gpu_count`` and ``spread_device``
decide how a study spreads runs over the visible GPUs; under torchrun ``resolve_device`` gives
each rank the GPU named by ``LOCAL_RANK``.

How a run computes there: ``resolve_precision`` turns a recipe's ``precision`` (``auto``,
``bf16``, ``fp32``) into ``bf16`` or ``fp32`` for a device. A run's data carries the result
(``bvkit.train.data``: its predictions) and so does each of its phases (``Phase.precision``:
its training steps); every forward pass enters ``autocast(device, precision)``, which is bf16
autocast under ``bf16`` and a no-op under ``fp32`` (no state outside the call: a model called
outside a run computes in float32). Losses are computed outside autocast on ``float_outputs``
(float32 logits); parameters, BN statistics and the optimizer stay float32.
"""

from __future__ import annotations

import functools
import os
import re

from bvkit.errors import BvkitError
from bvkit.methods import PRECISIONS

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


# ---------------------------------------------------------------- precision

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(name: object) -> str:
    """``name`` if it is a precision bvkit trains in, else a ``BvkitError``."""
    if name not in PRECISIONS:
        raise BvkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def resolve_precision(name: str = "auto", device=None) -> str:
    """``bf16`` or ``fp32`` for a run on ``device`` (a ``torch.device``; default the CPU).

    ``auto`` is ``bf16`` where the hardware computes bf16 natively (``fast_bf16``), else
    ``fp32``; ``bf16`` asked where it is not fast still runs (emulated, slowly), ``fp32`` always
    runs in float32."""
    name = check_precision(name)
    if name != "auto":
        return name
    return "bf16" if fast_bf16(device) else "fp32"


def fast_bf16(device=None) -> bool:
    """Whether ``device`` computes bf16 natively. CUDA: ``torch.cuda.is_bf16_supported`` without
    emulation (Ampere and later). CPU: the AVX512-BF16 or AMX instructions, from torch's own
    query (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``), else the
    ``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``. (``torch.backends.cpu.get_cpu_capability``
    says only "AVX512", and oneDNN's bf16 check is true on any AVX512 CPU, where bf16 is emulated
    and slower than float32.) Other devices: no."""
    import torch

    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch that does not emulate bf16 here
            return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these queries: read the CPU flags
        return any(flag in cpu_flags() for flag in _CPU_BF16_FLAGS)


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's feature flags as Linux lists them (empty where there is no such file)."""
    try:
        with open(path) as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return set()


def autocast(device, precision: str, cache_enabled: bool = True):
    """bf16 autocast on ``device`` when ``precision`` (a run's: ``bf16``, ``fp32``, or ``auto``)
    resolves to bf16 there, else a no-op (``cache_enabled=False`` for a CUDA graph capture: no
    weight-cast cache may outlive it)."""
    import torch

    bf16 = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=cache_enabled)


def float_outputs(output):
    """A forward's output with its floating tensors in float32: what losses are computed on."""
    import torch

    if torch.is_tensor(output):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, dict):
        return {key: float_outputs(value) for key, value in output.items()}
    return output
