"""The one bootstrap engine: percentile intervals, stratified by class over test samples
(optionally over models), for every interval of the decomposition, the comparisons and the
report (``docs/bias_variance.md``).

A replicate resamples, within each class, that class's test samples with replacement; it is
stored as multiplicities ``counts (B, N)`` that depend only on the labels and the seed, so two
methods decomposed on one test set with one seed see the same resamples (paired comparisons).
Resampling test samples reuses the per-sample terms; resampling models recomputes them
(:func:`bvkit.decomposition.passes.replicate_class_sums`). An interval is NaN where a replicate
is NaN, which happens only for a group without test samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bvkit.decomposition.grouping import Groups, divide
from bvkit.decomposition.population import combined_interval
from bvkit.errors import BvkitError

#: Draws generated per block (bounds the int64 temporaries).
_DRAWS_PER_BLOCK = 1 << 22


def check_bootstrap(n_boot, level):
    """``n_boot`` a non-negative integer, ``level`` in (0, 1)."""
    if int(n_boot) != n_boot or n_boot < 0:
        raise BvkitError(f"bootstrap must be a non-negative integer, got {n_boot}")
    if not 0 < level < 1:
        raise BvkitError(f"level must lie strictly between 0 and 1, got {level}")


@dataclass
class Resamples:
    """B class-stratified resamples of the test samples, held as multiplicities.

    ``counts[b, j]``: how often sample ``order[j]`` is drawn in replicate b, with ``order`` the
    samples sorted by class, so each class is one contiguous block of columns.
    """

    order: np.ndarray
    counts: np.ndarray

    @classmethod
    def draw(cls, labels, n_boot: int, seed) -> "Resamples":
        labels = np.asarray(labels, dtype=np.int64)
        rng = np.random.default_rng(seed)
        order = np.argsort(labels, kind="stable")
        sizes = np.bincount(labels)
        size_at = sizes[labels[order]]  # class size at each sorted position
        start_at = (np.cumsum(sizes) - sizes)[labels[order]]
        n_samples = labels.shape[0]
        counts = np.empty((n_boot, n_samples), dtype=np.int32)
        step = max(1, _DRAWS_PER_BLOCK // n_samples)
        for b0 in range(0, n_boot, step):
            rows = min(step, n_boot - b0)
            draws = start_at + rng.integers(0, size_at, size=(rows, n_samples))
            draws += (np.arange(rows) * n_samples)[:, None]
            counts[b0:b0 + rows] = np.bincount(
                draws.ravel(), minlength=rows * n_samples).reshape(rows, n_samples)
        return cls(order, counts)

    def by_sample(self) -> np.ndarray:
        """Multiplicities ``(B, N)`` indexed by the original sample order."""
        out = np.empty_like(self.counts)
        out[:, self.order] = self.counts
        return out


def model_weights(n_models: int, n_boot: int, seed) -> np.ndarray:
    """Multiplicities ``(B, D)`` of the models in B resamples with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_models, np.full(n_models, 1 / n_models), size=n_boot).astype(float)


def class_replicates(values: np.ndarray, groups: Groups, resamples: Resamples) -> np.ndarray:
    """Class means ``(B, C)`` of per-sample ``values`` over the resamples."""
    present = np.flatnonzero(groups.n_test)
    starts = np.cumsum(groups.n_test[present]) - groups.n_test[present]
    sorted_values = values[resamples.order]
    counts = resamples.counts
    out = np.full((counts.shape[0], groups.n_classes), np.nan)
    step = max(1, _DRAWS_PER_BLOCK // values.shape[0])
    for b0 in range(0, counts.shape[0], step):
        weighted = counts[b0:b0 + step] * sorted_values
        out[b0:b0 + step, present] = np.add.reduceat(weighted, starts, axis=1)
    out[:, present] /= groups.n_test[present]
    return out


def intervals(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval at ``level`` over axis 0; NaN where a replicate is NaN (a group
    without test samples)."""
    alpha = (1 - level) / 2
    lo = np.full(replicates.shape[1:], np.nan)
    hi = lo.copy()
    ok = ~np.isnan(replicates).any(axis=0)
    if ok.any():
        lo[ok], hi[ok] = np.quantile(replicates[:, ok], [alpha, 1 - alpha], axis=0)
    return lo, hi


def add_intervals(class_cols, split_cols, col, class_reps, groups: Groups, level, *,
                  estimate=None, leave_one_out=None):
    """``<col>_lo`` / ``_hi`` per class and per split from the class-mean replicates
    ``class_reps (B, C)``: percentile intervals, or, given the jackknife's class means
    ``leave_one_out (D, C)`` (the population estimator) and the class ``estimate (C,)``, the
    t interval over training sets and test samples together
    (:func:`bvkit.decomposition.population.combined_interval`)."""
    if leave_one_out is None:
        class_cols[f"{col}_lo"], class_cols[f"{col}_hi"] = intervals(class_reps, level)
        split_reps = groups.split_means(class_reps)
        split_cols[f"{col}_lo"], split_cols[f"{col}_hi"] = intervals(split_reps, level)
        return
    class_cols[f"{col}_lo"], class_cols[f"{col}_hi"] = combined_interval(
        estimate, leave_one_out, class_reps, level)
    split_cols[f"{col}_lo"], split_cols[f"{col}_hi"] = combined_interval(
        groups.split_means(estimate), groups.split_means(leave_one_out),
        groups.split_means(class_reps), level)


def sums_to_means(class_sums: np.ndarray, groups: Groups) -> np.ndarray:
    return divide(class_sums, groups.n_test)
