"""Where a run is: a tqdm progress bar that stays quiet when stderr is not a terminal, and
``OUT/progress.json``, the last finished epoch of a run in progress (``bvkit study status``
shows it for the runs in flight)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm  # not tqdm.auto: in a notebook without ipywidgets it warns even when disabled

from bvkit.atomic import atomic_write_text

PROGRESS_FILE = "progress.json"


def progress_bar(total: int, description: str, enabled: bool | None = None):
    """tqdm over ``total`` steps; ``enabled=None`` means: only when stderr is a TTY."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=description, disable=not enabled, leave=False, dynamic_ncols=True)


def write_progress(out: Path, record: dict, epochs: int) -> None:
    """``out/progress.json``: the stage, ``epoch`` of ``epochs`` and that epoch's record, replaced
    atomically after every epoch; the run's final outputs remove it (``clear_progress``). Not
    fsynced (``durable=False``): it is rewritten every epoch and only shown by ``bvkit study
    status``; a power cut costing it loses nothing a resumed run needs (its checkpoint is durable)."""
    atomic_write_text(Path(out) / PROGRESS_FILE, json.dumps({**record, "epochs": int(epochs)}) + "\n", durable=False)


def read_progress(out: Path) -> dict | None:
    """``out/progress.json`` read back; None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(out) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def clear_progress(out: Path) -> None:
    (Path(out) / PROGRESS_FILE).unlink(missing_ok=True)
