"""The training engine: ``train(method, dataset, ...)`` runs a ``bvkit.methods`` recipe.

Imported lazily so ``bvkit.train.commands`` (loaded by the CLI) does not pull in torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "bvkit.train.run",
    "TrainResult": "bvkit.train.run",
    "validation_split": "bvkit.train.run",
    "resolve_device": "bvkit.train.engine",
    "run_phase": "bvkit.train.engine",
    "Schedule": "bvkit.train.schedule",
    "ride_schedule": "bvkit.train.schedule",
    "save_checkpoint": "bvkit.train.checkpoint",
    "load_checkpoint": "bvkit.train.checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bvkit.train' has no attribute {name!r}")
