"""Learning-rate schedules as pure functions of the step: RIDE's warm-up + steps, and cosine.

Milestones are given for a reference schedule (RIDE / LDAM CIFAR: 200 epochs, warm-up 5,
x0.01 from epoch 161, x0.0001 from epoch 181, DRW from epoch 161). A shorter ``--epochs``
scales every milestone by ``epochs / reference_epochs`` (rounded; at least one epoch of
warm-up when the reference has one; lr steps kept at least one epoch apart) so the short run
keeps the same shape; see :func:`scale_epoch` and :func:`scale_milestones`. Example, 8
epochs: warm-up 1 epoch, x0.01 from epoch 7 and x0.0001 from epoch 8 (1-based), DRW from 7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REFERENCE_EPOCHS = 200


def scale_epoch(epoch: int | None, epochs: int, reference_epochs: int = REFERENCE_EPOCHS) -> int | None:
    """A milestone (0-based epoch index) of a ``reference_epochs`` schedule moved to ``epochs``."""
    if epoch is None or epochs == reference_epochs:
        return epoch
    return int(round(epoch * epochs / reference_epochs))


@dataclass(frozen=True)
class Schedule:
    """lr multiplier per optimisation step; milestones are 0-based epoch indices, already scaled.

    kind "step": linear warm-up over ``warmup_epochs`` (per step), then ``factors[i]`` from epoch
    ``milestones[i]`` on. kind "cosine": warm-up, then half a cosine from 1 to 0 over the rest.
    """

    kind: str
    epochs: int
    steps_per_epoch: int
    warmup_epochs: int = 0
    milestones: tuple[int, ...] = ()
    factors: tuple[float, ...] = ()

    def __post_init__(self):
        if self.kind not in ("step", "cosine", "constant"):
            raise ValueError(f"unknown schedule {self.kind!r} (step, cosine, constant)")
        if len(self.milestones) != len(self.factors):
            raise ValueError("milestones and factors must have the same length")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def factor(self, step: int) -> float:
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            span = max(self.total_steps - warmup_steps, 1)
            return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))
        epoch = step // self.steps_per_epoch
        result = 1.0
        for milestone, factor in zip(self.milestones, self.factors):
            if epoch >= milestone:
                result = factor
        return result


def ride_schedule(
    epochs: int,
    steps_per_epoch: int,
    kind: str = "step",
    warmup_epochs: int = 5,
    milestones: tuple[int, ...] = (160, 180),
    factors: tuple[float, ...] = (0.01, 0.0001),
    reference_epochs: int = REFERENCE_EPOCHS,
) -> Schedule:
    """The published schedule with milestones given for ``reference_epochs``, scaled to ``epochs``."""
    warmup = scale_epoch(warmup_epochs, epochs, reference_epochs) if warmup_epochs else 0
    if warmup_epochs and warmup < 1:
        warmup = 1
    return Schedule(
        kind=kind,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=min(warmup, epochs),
        milestones=scale_milestones(milestones, epochs, reference_epochs),
        factors=tuple(factors),
    )


def scale_milestones(milestones, epochs: int, reference_epochs: int = REFERENCE_EPOCHS) -> tuple[int, ...]:
    """Scaled milestones kept strictly increasing, so a short run never merges two lr steps
    (a milestone pushed to ``epochs`` or beyond simply never fires)."""
    scaled: list[int] = []
    for milestone in milestones:
        value = scale_epoch(milestone, epochs, reference_epochs)
        scaled.append(value if not scaled else max(value, scaled[-1] + 1))
    return tuple(scaled)
