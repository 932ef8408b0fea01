"""A tqdm progress bar that stays quiet when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm  # not tqdm.auto: in a notebook without ipywidgets it warns even when disabled


def progress_bar(total: int, description: str, enabled: bool | None = None):
    """tqdm over ``total`` steps; ``enabled=None`` means: only when stderr is a TTY."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=description, disable=not enabled, leave=False, dynamic_ncols=True)
