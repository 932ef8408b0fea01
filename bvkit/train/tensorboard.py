"""A run's epochs as TensorBoard scalars, in TensorBoard's own event format.

``bvkit train --tensorboard`` (``train(..., tensorboard=True)``, ``[train] tensorboard = true``
in a study) writes ``OUT/tensorboard/events.out.tfevents.*`` through ``torch.utils.tensorboard``'s
``SummaryWriter`` (the ``tensorboard`` package: ``pip install 'bvkit[tensorboard]'``). Every
column of an epoch record (``bvkit.train.loop.EpochRecord``, the rows of history.csv) that has a
value becomes the scalar ``<stage>/<column>`` at step ``epoch``: loss, accuracy (training), lr,
images_per_s, val_accuracy, val_many / val_medium / val_few, val_experts (routed RIDE). A
resumed run appends a new event file beside the first; TensorBoard reads them as one run.
"""

from __future__ import annotations

import math
from pathlib import Path

from bvkit.errors import BvkitError

TENSORBOARD_DIR = "tensorboard"
SCALARS = ("loss", "accuracy", "lr", "images_per_s", "val_accuracy", "val_many", "val_medium", "val_few",
           "val_experts")
INSTALL = "pip install 'bvkit[tensorboard]'"


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``; a one-line error when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # torch raises it when the tensorboard package is absent
        raise BvkitError(f"--tensorboard needs the tensorboard package ({err}); install it with: {INSTALL}") from None
    return SummaryWriter


def scalar_tag(stage: str, column: str) -> str:
    return f"{stage}/{column}"


class EpochScalars:
    """Writes each epoch record it is called with into ``out/tensorboard`` (a ``LoopContext``'s
    ``on_epoch``), flushed at once so a running TensorBoard shows the epoch."""

    def __init__(self, out: str | Path):
        self.log_dir = Path(out) / TENSORBOARD_DIR
        self.writer = summary_writer_class()(log_dir=str(self.log_dir))

    def __call__(self, record: dict) -> None:
        for column in SCALARS:
            value = record.get(column)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(scalar_tag(record["stage"], column), value, global_step=int(record["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
