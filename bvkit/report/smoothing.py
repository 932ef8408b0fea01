"""Centred moving averages over classes sorted head to tail (the figures' smoothed curves)."""

from __future__ import annotations

import numpy as np

from bvkit.errors import BvkitError


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along the last axis, over the window's non-NaN values (as
    pandas' ``rolling(window, center=True, min_periods=1).mean()``); windows shrink at the ends,
    NaN where a window holds no value."""
    values = np.asarray(values, dtype=float)
    check_window(window)
    half = window // 2
    n = values.shape[-1]
    present = ~np.isnan(values)
    zeros = np.zeros(values.shape[:-1] + (1,))
    sums = np.concatenate([zeros, np.cumsum(np.where(present, values, 0.0), axis=-1)], axis=-1)
    counts = np.concatenate([zeros, np.cumsum(present, axis=-1)], axis=-1)
    starts = np.clip(np.arange(n) - half, 0, n)
    stops = np.clip(np.arange(n) + half + 1, 0, n)
    total = sums[..., stops] - sums[..., starts]
    count = counts[..., stops] - counts[..., starts]
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def check_window(window: int) -> int:
    """A centred window must be a positive odd number of classes."""
    if int(window) != window or window < 1 or window % 2 == 0:
        raise BvkitError(f"moving-average window must be a positive odd integer, got {window}")
    return int(window)


def default_window(n_classes: int) -> int:
    """An odd window of about a tenth of the classes (1 for very few classes)."""
    window = max(1, int(round(n_classes / 10)))
    return window if window % 2 else window + 1
