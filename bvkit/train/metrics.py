"""Accuracy per class and per shot split, and RIDE's expert usage; the split vocabulary and
the split rule are ``bvkit.data.profiles``'."""

from __future__ import annotations

import numpy as np

from bvkit.data.profiles import ALL, SPLITS, split_means

# a split's accuracy is the mean of its classes' accuracies (classes without test samples left out)
split_accuracy = split_means


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) accuracy of each class on its test samples; NaN for a class with no test sample."""
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    hits = np.bincount(labels, weights=(preds == labels).astype(float), minlength=n_classes)
    totals = np.bincount(labels, minlength=n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


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
