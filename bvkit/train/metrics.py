"""Accuracy per class and per shot split, and RIDE's expert usage; the split vocabulary and
the split rule are ``bvkit.data.profiles``'."""

from __future__ import annotations

import numpy as np

from bvkit.data.profiles import ALL, SPLITS, per_class_accuracy  # noqa: F401  (re-exported: the training code's accuracy helpers in one import)


def mean_class_accuracy(preds: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Mean of ``per_class_accuracy`` over the classes that have samples."""
    return float(np.nanmean(per_class_accuracy(preds, labels, n_classes)))


def share_of_experts(n_experts_used: np.ndarray, num_experts: int) -> list[float]:
    """Share of samples that used 1, 2, ..., num_experts experts."""
    counts = np.bincount(np.asarray(n_experts_used) - 1, minlength=num_experts)[:num_experts]
    return (counts / max(counts.sum(), 1)).tolist()


def expert_usage_by_split(
    n_experts_used: np.ndarray, labels: np.ndarray, splits: np.ndarray, num_experts: int
) -> dict[str, list[float] | None]:
    """share_of_experts overall and per shot split of the sample's class; None for an empty split."""
    sample_split = np.asarray(splits)[np.asarray(labels)]
    usage = {ALL: share_of_experts(n_experts_used, num_experts)}
    for split in SPLITS:
        mask = sample_split == split
        usage[split] = share_of_experts(n_experts_used[mask], num_experts) if mask.any() else None
    return usage
