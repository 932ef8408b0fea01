"""Learning-rate schedules as pure functions of the step: RIDE's warm-up + steps, and cosine.

Milestones are given for a reference schedule (RIDE / LDAM CIFAR: 200 epochs, warm-up 5,
x0.01 from epoch 161, x0.0001 from epoch 181, DRW from epoch 161). A run of other ``epochs``
moves every milestone (warm-up, lr steps, the DRW switch) by one time map, named by the
recipe's ``schedule_scaling`` (:data:`SCALINGS`, :func:`time_map`):

* ``proportional``: every milestone times ``epochs / reference_epochs`` (rounded), so the short
  run keeps the reference's shape. Example, 40 epochs: x0.01 from epoch 33, x0.0001 from 37,
  DRW from 33: four epochs after the drop at lr 1e-3 where the reference has twenty.
* ``keep-steps``: the phase after the first lr drop keeps its reference length in epochs (so in
  optimisation steps on the same data) up to half the run; the phase before it, and the
  milestones inside each phase, shrink in proportion. 40 epochs: drop at 21, second at 31.
* ``min-share``: as proportional, but the phase after the first drop takes at least
  :data:`MIN_TAIL_SHARE` of the run. 40 epochs: drop at 25, second at 33.

At least one epoch of warm-up is kept when the reference has one, and lr steps stay at least
one epoch apart (a milestone pushed to ``epochs`` or beyond simply never fires). A longer run,
a full-length one and a schedule without lr steps (cosine) are scaled in proportion whatever
the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bvkit.methods.recipe import SCHEDULE_SCALINGS as SCALINGS  # the rules' names, defined with the recipe

REFERENCE_EPOCHS = 200
MAX_TAIL_SHARE = 0.5  # keep-steps: the phase after the first drop takes at most half the run
MIN_TAIL_SHARE = 0.4  # min-share: ... and at least this share of it


def scale_epoch(epoch: int | None, epochs: int, reference_epochs: int = REFERENCE_EPOCHS) -> int | None:
    """A milestone (0-based epoch index) of a ``reference_epochs`` schedule moved to ``epochs``
    in proportion."""
    if epoch is None or epochs == reference_epochs:
        return epoch
    return int(round(epoch * epochs / reference_epochs))


def first_drop(epochs: int, first_milestone: int | None, reference_epochs: int = REFERENCE_EPOCHS,
               scaling: str = "proportional") -> int | None:
    """The epoch (0-based) of the first lr drop of an ``epochs`` run under the rule ``scaling``
    (None without lr steps)."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown schedule scaling {scaling!r} ({', '.join(SCALINGS)})")
    if first_milestone is None:
        return None
    proportional = scale_epoch(first_milestone, epochs, reference_epochs)
    if scaling == "proportional" or epochs >= reference_epochs:
        return proportional
    tail = reference_epochs - first_milestone
    if scaling == "keep-steps":
        pivot = epochs - min(tail, int(epochs * MAX_TAIL_SHARE))
    else:
        pivot = min(proportional, epochs - int(math.ceil(epochs * MIN_TAIL_SHARE)))
    return max(pivot, 1)  # at least one epoch at the full lr


def time_map(epochs: int, reference_epochs: int = REFERENCE_EPOCHS, first_milestone: int | None = None,
             scaling: str = "proportional"):
    """``epoch -> epoch``: a milestone of the reference schedule moved to an ``epochs`` run.
    The first lr drop goes where :func:`first_drop` puts it; the epochs before it and after it
    are each stretched in proportion (proportional: one stretch for the whole run)."""
    pivot = first_drop(epochs, first_milestone, reference_epochs, scaling)
    if pivot is None or pivot == scale_epoch(first_milestone, epochs, reference_epochs):
        return lambda epoch: scale_epoch(epoch, epochs, reference_epochs)

    def moved(epoch: int | None) -> int | None:
        if epoch is None:
            return None
        if epoch <= first_milestone:
            return int(round(epoch * pivot / first_milestone))
        return pivot + int(round((epoch - first_milestone) * (epochs - pivot) / (reference_epochs - first_milestone)))

    return moved


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
    scaling: str = "proportional",
) -> Schedule:
    """The published schedule with milestones given for ``reference_epochs``, moved to
    ``epochs`` by the rule ``scaling`` (:func:`time_map`)."""
    move = time_map(epochs, reference_epochs, milestones[0] if milestones and kind == "step" else None, scaling)
    warmup = move(warmup_epochs) if warmup_epochs else 0
    if warmup_epochs and warmup < 1:
        warmup = 1
    return Schedule(
        kind=kind,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=min(warmup, epochs),
        milestones=scale_milestones(milestones, epochs, reference_epochs, move),
        factors=tuple(factors),
    )


def scale_milestones(milestones, epochs: int, reference_epochs: int = REFERENCE_EPOCHS,
                     move=None) -> tuple[int, ...]:
    """Milestones moved by ``move`` (default: in proportion), kept strictly increasing, so a
    short run never merges two lr steps (a milestone pushed to ``epochs`` or beyond simply
    never fires)."""
    move = move or (lambda epoch: scale_epoch(epoch, epochs, reference_epochs))
    scaled: list[int] = []
    for milestone in milestones:
        value = move(milestone)
        scaled.append(value if not scaled else max(value, scaled[-1] + 1))
    return tuple(scaled)
