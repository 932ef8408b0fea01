"""``torch.compile`` for the training forward (``--compile``, ``[train] compile``): where it is
used, and what it cost.

``on`` compiles stage one's training forward (forward and backward through inductor; the loss,
the optimizer step, validation and the test watch stay eager), ``off`` never, and ``auto`` only
where it was measured to pay for itself over the run: the compiled step's speed-up on that kind
of device (``MEASURED``, with the recording it comes from) must save more than the compile costs
within the run's steps. A kind of device without a measurement is not compiled by ``auto``.

Inductor keeps its compiled graphs on disk (its FX-graph and AOTAutograd caches, under
``$TORCHINDUCTOR_CACHE_DIR``, by default ``/tmp/torchinductor_$USER``), so a second run of the
same shapes, in this process or another, loads them instead of compiling again;
``CompileRecord`` counts the graphs a run compiled and the cache's hits and misses for its
``metrics.json``. The step's lr, the DRW switch and RIDE's temperatures live outside the compiled
forward, so they never recompile it; the last, smaller batch of an epoch does once (a dynamic
batch dimension from then on).
"""

from __future__ import annotations

from dataclasses import dataclass

from bvkit.errors import BvkitError

COMPILE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Measured:
    """The compiled training step against the eager one on a kind of device (a paired ratio of
    images per second), the seconds its first step took to compile, and an eager step's seconds."""

    speedup: float
    compile_s: float
    step_s: float
    source: str

    def steps_to_pay(self) -> float:
        """Steps after which the compiled run is ahead (inf where the compiled step is not faster)."""
        saved = self.step_s * (1 - 1 / self.speedup)
        return self.compile_s / saved if saved > 0 else float("inf")


# CIFAR ResNet-32 CE step, batch 128, bf16, 2 threads of the 2-core AMD EPYC development machine
# (CPUID family 0x19 model 0x11); RIDE-3's compiled step was slower still (0.86-0.92x; whole epochs
# in experiments/results/compile_parity.md: 0.91x and 0.95x CE, 0.89x RIDE-3). No CUDA measurement yet: on
# CUDA the step is replayed from a CUDA graph instead (bvkit.train.graphs).
MEASURED = {
    "cpu": Measured(speedup=0.98, compile_s=20.3, step_s=0.236,
                    source="experiments/results/bench_step.txt"),
}


def check_compile(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise BvkitError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


def resolve_compile(mode: str, device, steps: int, measured: dict | None = None) -> tuple[bool, str]:
    """Whether a run of ``steps`` training steps on ``device`` (a ``torch.device`` or its name)
    compiles its forward, and why; ``measured``: the table to decide by (``MEASURED``)."""
    check_compile(mode)
    if mode != "auto":
        return mode == "on", f"compile={mode}"
    kind = str(device).split(":")[0]
    entry = (MEASURED if measured is None else measured).get(kind)
    if entry is None:
        return False, f"auto: no measurement of the compiled step on {kind}"
    needed = entry.steps_to_pay()
    if steps < needed:
        why = ("the compiled step is not faster" if needed == float("inf")
               else f"{steps} steps, the compile pays after {needed:.0f}")
        return False, f"auto: off on {kind} ({why}; {entry.source})"
    return True, f"auto: on ({steps} steps, the compile pays after {needed:.0f}; {entry.source})"


def compile_forward(forward):
    """``forward`` (a module or a function) through ``torch.compile`` (inductor)."""
    import torch

    return torch.compile(forward)


_COUNTED = {"graphs": ("stats", "unique_graphs"), "fx_cache_hits": ("inductor", "fxgraph_cache_hit"),
            "fx_cache_misses": ("inductor", "fxgraph_cache_miss")}


class CompileRecord:
    """What one run compiled: dynamo's and inductor's process-wide counters, taken as the
    difference between the run's start and ``record()``, with the decision and its reason."""

    def __init__(self, mode: str, enabled: bool, reason: str):
        self.mode, self.enabled, self.reason = mode, enabled, reason
        self._start = _counters()

    def record(self) -> dict:
        out = {"mode": self.mode, "enabled": self.enabled, "reason": self.reason}
        if self.enabled:
            now = _counters()
            out.update({name: now[name] - self._start[name] for name in _COUNTED})
        return out


def _counters() -> dict:
    from torch._dynamo.utils import counters

    return {name: int(counters[group][key]) for name, (group, key) in _COUNTED.items()}
