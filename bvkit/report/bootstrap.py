"""Paired, class-stratified bootstrap of per-class differences, and their smoothed curves.

Both methods are scored on the same test samples, so one resample of test indices (drawn within
each class) is applied to both: the difference's interval then reflects only the sampling of
the test set, as BIAS_VARIANCE.md's "Uncertainty" asks.
"""

from __future__ import annotations

import numpy as np


def class_mean_replicates(
    values: np.ndarray, classes: np.ndarray, class_ids: np.ndarray, bootstrap: int, seed: int
) -> np.ndarray:
    """(B, C) means of ``values`` per class of ``class_ids``, each over a resample of the class's
    samples drawn with replacement (stratified percentile bootstrap)."""
    values = np.asarray(values, dtype=float)
    classes = np.asarray(classes)
    rng = np.random.default_rng(seed)
    replicates = np.full((bootstrap, len(class_ids)), np.nan)
    for j, cls in enumerate(class_ids):
        members = values[classes == cls]
        if members.size == 0:
            continue
        draws = rng.integers(0, members.size, size=(bootstrap, members.size))
        replicates[:, j] = members[draws].mean(axis=1)
    return replicates


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along the last axis; windows shrink at the ends (no padding)."""
    values = np.asarray(values, dtype=float)
    check_window(window)
    half = window // 2
    n = values.shape[-1]
    padded = np.concatenate([np.zeros(values.shape[:-1] + (1,)), np.cumsum(values, axis=-1)], axis=-1)
    starts = np.clip(np.arange(n) - half, 0, n)
    stops = np.clip(np.arange(n) + half + 1, 0, n)
    return (padded[..., stops] - padded[..., starts]) / (stops - starts)


def check_window(window: int) -> int:
    """A centred window must be a positive odd number of classes."""
    from bvkit.errors import BvkitError

    if int(window) != window or window < 1 or window % 2 == 0:
        raise BvkitError(f"moving-average window must be a positive odd integer, got {window}")
    return int(window)


def default_window(n_classes: int) -> int:
    """An odd window of about a tenth of the classes (1 for very few classes)."""
    window = max(1, int(round(n_classes / 10)))
    return window if window % 2 else window + 1


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0
    return (np.nanquantile(replicates, alpha, axis=0), np.nanquantile(replicates, 1 - alpha, axis=0))
