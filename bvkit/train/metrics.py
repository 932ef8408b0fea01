"""Accuracy per class and per shot split (a split's accuracy = mean of its classes' accuracies)."""

from __future__ import annotations

import numpy as np

SPLITS = ("many", "medium", "few")


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) accuracy of each class on its test samples; NaN for a class with no test sample."""
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    hits = np.bincount(labels, weights=(preds == labels).astype(float), minlength=n_classes)
    totals = np.bincount(labels, minlength=n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def split_accuracy(class_accuracy: np.ndarray, splits: np.ndarray) -> dict[str, float | None]:
    """{"all", "many", "medium", "few"} -> mean class accuracy; None for an empty split."""
    class_accuracy = np.asarray(class_accuracy, dtype=float)
    splits = np.asarray(splits)
    result = {"all": _mean(class_accuracy)}
    for split in SPLITS:
        result[split] = _mean(class_accuracy[splits == split])
    return result


def share_of_experts(n_experts_used: np.ndarray, num_experts: int) -> list[float]:
    """Share of samples that used 1, 2, ..., num_experts experts."""
    counts = np.bincount(np.asarray(n_experts_used) - 1, minlength=num_experts)[:num_experts]
    return (counts / max(counts.sum(), 1)).tolist()


def expert_usage_by_split(
    n_experts_used: np.ndarray, labels: np.ndarray, splits: np.ndarray, num_experts: int
) -> dict[str, list[float] | None]:
    """share_of_experts overall and per shot split of the sample's class; None for an empty split."""
    sample_split = np.asarray(splits)[np.asarray(labels)]
    usage = {"all": share_of_experts(n_experts_used, num_experts)}
    for split in SPLITS:
        mask = sample_split == split
        usage[split] = share_of_experts(n_experts_used[mask], num_experts) if mask.any() else None
    return usage


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None
