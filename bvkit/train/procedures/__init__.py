"""Stage-one procedures beyond "one model, one loss, one loader".

BBN's bilateral sampling, OLTR's memory stage, LFME's experts and student and M2m's
generation each need their own loop. A recipe names one by ``procedure``; ``train()`` builds a
:class:`ProcedureEnv` (the run's data on the device, its checkpoint context, the payload being
resumed, ``train`` itself for nested runs) and evaluates the model the procedure returns,
exactly as for every other method. How each differs from its authors' code: ``docs/recipes.md``.

Helpers a procedure leans on:

* ``env.run(phase, epochs)`` trains one :class:`bvkit.train.loop.Phase` with per-epoch
  checkpoints and resume (a procedure has one such phase, index 0, the run's own; it carries
  its own ``validate``, ``checkpoint_extra`` and ``precision=env.precision``);
* ``env.subrun(name, method, ...)`` trains a whole other recipe (a pre-trained classifier, an
  expert on a subset) as a nested run under ``out/name``, itself resumable.

    >>> @register_procedure("my-method")
    ... def my_method(env: ProcedureEnv) -> nn.Module: ...
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from bvkit.methods import Recipe
from bvkit.registry import Registry
from bvkit.train.loop import train_phase
from bvkit.train.outputs import resume_phase

PROCEDURES: Registry[Callable[["ProcedureEnv"], nn.Module]] = Registry(
    "procedure", built_in=tuple(f"bvkit.train.procedures.{name}" for name in ("bbn", "oltr", "lfme", "m2m")))


def register_procedure(name: str, *, overwrite: bool = False):
    """Decorator: ``fn(env: ProcedureEnv) -> nn.Module`` is the procedure ``name``."""
    return PROCEDURES.decorator(name, overwrite=overwrite)


def get_procedure(name: str) -> Callable[["ProcedureEnv"], nn.Module]:
    return PROCEDURES.get(name)


def list_procedures(pattern: str = "*") -> list[str]:
    return PROCEDURES.names(pattern)


@dataclass
class ProcedureEnv:
    """What a procedure gets: the recipe, the run's data and where it writes."""

    recipe: Recipe
    long_tailed: Any  # bvkit.data.LongTailed: .pool, .train_indices, .test, .counts
    train_idx: np.ndarray  # indices into long_tailed.pool of the training images (LT subset less validation)
    val_idx: np.ndarray  # indices into long_tailed.pool of the validation images
    train_set: Any  # bvkit.train.data.Tensors (x uint8 (N, C, H, W) on the device, y int64)
    val_set: Any
    train_counts: np.ndarray  # images per class in train_set
    augment: Any  # bvkit.data.Augment of the recipe
    normalizer: Callable[[torch.Tensor], torch.Tensor]  # uint8 -> normalised float (no augmentation)
    n_classes: int
    in_channels: int
    seed: int
    device: torch.device
    ctx: Any  # bvkit.train.loop.LoopContext: the run's
    train: Callable[..., Any]  # bvkit.train.train, for nested runs (subrun)
    payload: dict | None = None  # the run's checkpoint being resumed, if any
    out: Path | None = None
    progress: bool | None = None
    metrics: dict = field(default_factory=dict)  # extra keys for metrics.json
    precision: str = "fp32"  # the run's (``bvkit.train.devices``): its phase's and every prediction's

    def options(self) -> dict:
        """The recipe's ``procedure_kwargs``."""
        return dict(self.recipe.procedure_kwargs)

    def run(self, phase, epochs: int) -> None:
        """Train ``phase`` for ``epochs`` epochs, resuming from the payload when it is this phase's."""
        start = resume_phase(phase, self.payload)
        phase.checkpoint_extra = {**phase.checkpoint_extra, "stage_epochs": epochs}
        train_phase(phase, epochs, self.ctx, start_epoch=start)

    def subrun(self, name: str, method: str | Recipe, *, train_indices=None, seed: int | None = None,
               **overrides: Any):
        """Train ``method`` as a nested run under ``out/name`` (resumable) and return its
        :class:`bvkit.train.run.TrainResult`. ``train_indices`` (into ``long_tailed.pool``) replace the
        long-tailed subset, e.g. an expert's many-shot classes."""
        long_tailed = self.long_tailed if train_indices is None else replace(
            self.long_tailed, train_indices=np.asarray(train_indices, dtype=np.int64))
        out = self.out / name if self.out is not None else None
        log = self.ctx.log
        return self.train(method, long_tailed, seed=self.seed if seed is None else seed, out=out, device=self.device,
                          progress=self.progress, log=(lambda line: log(f"[{name}] {line}")) if log else None,
                          **{"precision": self.recipe.precision, **overrides})
