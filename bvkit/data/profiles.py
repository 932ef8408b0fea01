"""Long-tailed class-count profiles and shot splits: the analysis vocabulary
(``docs/subsets.md``).

Pure numpy: usable without torch and without any data on disk. Every layer takes the split
names, the default thresholds and the rule that a split's value is the mean of its classes'
values from here, so the training metrics, the decomposition and the report agree by
construction.
"""

from __future__ import annotations

import numpy as np

from bvkit.errors import BvkitError

SPLITS = ("many", "medium", "few")
ALL = "all"
SPLITS_WITH_ALL = (*SPLITS, ALL)
MANY_SHOT = 100  # a class with more training images than this is many-shot
FEW_SHOT = 20  # a class with fewer training images than this is few-shot
PROFILES = ("exp", "step")


def long_tail_counts(n_max: int, n_classes: int, imbalance: float, profile: str = "exp") -> np.ndarray:
    """Per-class training counts, class 0 the head, as in Cao et al. (2019).

    ``exp``: ``n_c = int(n_max * (1/IF) ** (c / (C-1)))``.
    ``step``: the first ``C // 2`` classes keep ``n_max``, the rest ``int(n_max / IF)``
    (for odd C the extra class goes to the tail; the reference code silently drops it).
    """
    n_max, n_classes = int(n_max), int(n_classes)
    imbalance = float(imbalance)
    if not np.isfinite(imbalance) or imbalance < 1:
        raise BvkitError(f"imbalance factor must be a number >= 1, got {imbalance:g}")
    if n_max < 1:
        raise BvkitError(f"n_max must be >= 1, got {n_max}")
    if n_classes < 1:
        raise BvkitError(f"number of classes must be >= 1, got {n_classes}")
    if profile == "exp":
        if n_classes == 1:
            return np.array([n_max], dtype=np.int64)
        ratio = 1.0 / imbalance
        counts = [int(n_max * ratio ** (c / (n_classes - 1.0))) for c in range(n_classes)]
    elif profile == "step":
        tail = int(n_max * (1.0 / imbalance))
        counts = [n_max] * (n_classes // 2) + [tail] * (n_classes - n_classes // 2)
    else:
        raise BvkitError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.min() < 1:
        raise BvkitError(
            f"imbalance {imbalance:g} with n_max {n_max} leaves class {int(np.argmin(counts))} "
            "with no training image; lower the imbalance or raise n_max"
        )
    return counts


def check_thresholds(many, few) -> tuple[int, int]:
    """The shot thresholds ``(many, few)``, checked once for every layer: whole numbers >= 0
    with ``few <= many + 1`` (else a class could be both many- and few-shot)."""
    for name, value in (("many", many), ("few", few)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise BvkitError(f"shot threshold {name} must be a whole number >= 0, got {value!r}")
    if few > many + 1:
        raise BvkitError(f"shot thresholds need few <= many + 1, got many={many}, few={few}")
    return int(many), int(few)


def shot_splits(train_counts, many: int = MANY_SHOT, few: int = FEW_SHOT) -> np.ndarray:
    """Shot split of each class from its training count: many ``n > many``,
    few ``n < few``, medium otherwise."""
    counts = np.asarray(train_counts)
    if counts.ndim != 1:
        raise BvkitError(f"train_counts must be one-dimensional, got shape {counts.shape}")
    many, few = check_thresholds(many, few)
    splits = np.full(counts.shape, "medium", dtype="<U6")
    splits[counts > many] = "many"
    splits[counts < few] = "few"
    return splits


def add_split_options(parser) -> None:
    """``--many`` and ``--few``: the shot-split thresholds of :func:`shot_splits`, one wording
    in every command that takes them."""
    parser.add_argument("--many", type=int, default=MANY_SHOT,
                        help=f"many-shot: classes with more than MANY training images (default {MANY_SHOT})")
    parser.add_argument("--few", type=int, default=FEW_SHOT,
                        help=f"few-shot: classes with fewer than FEW training images (default {FEW_SHOT})")


def per_class_accuracy(predicted, labels, n_classes: int) -> np.ndarray:
    """(C,) accuracy of each class on its test samples; NaN for a class with no test sample."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    hits = np.bincount(labels, weights=(predicted == labels).astype(float), minlength=n_classes)
    totals = np.bincount(labels, minlength=n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def split_accuracy(predicted, labels, train_counts, many: int = MANY_SHOT,
                   few: int = FEW_SHOT) -> dict[str, float | None]:
    """``{"all", "many", "medium", "few"}`` -> mean per-class accuracy of the predicted labels,
    the splits taken from ``train_counts`` at ``many`` / ``few`` (None for an empty split): the
    one rule behind every per-split accuracy (metrics.json, metrics.csv, ``Study.accuracy``)."""
    counts = np.asarray(train_counts)
    return split_means(per_class_accuracy(predicted, labels, len(counts)), shot_splits(counts, many, few))


def split_sizes(splits) -> dict[str, int]:
    """Number of classes in each shot split (zero for an empty split)."""
    splits = np.asarray(splits)
    return {name: int(np.sum(splits == name)) for name in SPLITS}


def empty_splits(splits) -> list[str]:
    """The shot splits with no class (e.g. "few" for CIFAR-10-LT at IF=100)."""
    return [name for name, size in split_sizes(splits).items() if size == 0]


def split_means(class_values, class_split) -> dict[str, float | None]:
    """``{"all", "many", "medium", "few"}`` -> the mean of the classes' values (NaN classes,
    those without test samples, left out); ``None`` for a split with no such class."""
    values = np.asarray(class_values, dtype=float)
    class_split = np.asarray(class_split)
    result = {ALL: _nanmean(values)}
    for split in SPLITS:
        result[split] = _nanmean(values[class_split == split])
    return result


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None
