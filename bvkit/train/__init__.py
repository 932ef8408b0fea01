"""The training layer: ``train(method, dataset, ...)`` runs a ``bvkit.methods`` recipe;
``train_packed`` trains several runs of one recipe as one packed network.

Imported lazily so ``bvkit.train.commands`` (loaded by the CLI) does not pull in torch. The
modules, bottom up: ``devices``, ``compiling``, ``ddp``, ``schedule``, ``checkpoint``, ``metrics``, ``graphs``,
``loop`` (the epoch loop and batched prediction), ``data`` (a run's data), ``builders`` (what a
recipe builds), ``evaluation``, ``outputs`` (the run directory and resume), ``decoupled`` and
``routing`` (second-stage heads), ``stages``, ``procedures``, ``run`` (``train``) and
``packing`` (``train_packed``); see ``docs/architecture.md``.
"""

from __future__ import annotations

from bvkit.lazy import lazy_exports

_EXPORTS = {
    "train": "bvkit.train.run",
    "TrainResult": "bvkit.train.run",
    "train_packed": "bvkit.train.packing",
    "PackMember": "bvkit.train.packing",
    "packable": "bvkit.train.packing",
    "validation_split": "bvkit.train.data",
    "resolve_device": "bvkit.train.devices",
    "train_phase": "bvkit.train.loop",
    "Schedule": "bvkit.train.schedule",
    "ride_schedule": "bvkit.train.schedule",
    "save_checkpoint": "bvkit.train.checkpoint",
    "load_checkpoint": "bvkit.train.checkpoint",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("bvkit.train", _EXPORTS, globals())
