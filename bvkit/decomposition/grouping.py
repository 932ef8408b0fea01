"""Grouping per-sample terms into tidy per-class and per-split frames.

A class's value is the mean over its test samples; a split's value is the mean over its classes
that have test samples (``n_classes`` counts those), ``all`` the mean over every such class:
:func:`bvkit.data.profiles.split_means`'s rule, here on ``(..., C)`` arrays of replicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from bvkit.data.profiles import ALL, FEW_SHOT, MANY_SHOT, SPLITS_WITH_ALL, shot_splits
from bvkit.decomposition.terms import columns_of


@dataclass
class Groups:
    """Which test samples belong to which class, and which classes to which split."""

    labels: np.ndarray  # (N,) int64
    n_classes: int
    train_counts: np.ndarray | None
    class_names: np.ndarray  # (C,) str
    class_split: np.ndarray  # (C,) str
    splits: tuple[str, ...]  # split rows of per-split frames, "all" last

    @classmethod
    def build(cls, labels, n_classes, train_counts=None, class_names=None, many=MANY_SHOT,
              few=FEW_SHOT):
        labels = np.asarray(labels, dtype=np.int64)
        if class_names is None:
            class_names = np.arange(n_classes).astype(str)
        if train_counts is None:
            class_split, splits = np.full(n_classes, ALL), (ALL,)
        else:
            train_counts = np.asarray(train_counts, dtype=np.int64)
            class_split, splits = shot_splits(train_counts, many, few), SPLITS_WITH_ALL
        return cls(labels, n_classes, train_counts, np.asarray(class_names, dtype=str),
                   class_split, splits)

    @cached_property
    def n_test(self) -> np.ndarray:
        """Test samples per class."""
        return np.bincount(self.labels, minlength=self.n_classes)

    def members(self, split: str) -> np.ndarray:
        """Classes of a split that have test samples (boolean mask over classes)."""
        present = self.n_test > 0
        return present if split == ALL else present & (self.class_split == split)

    def class_means(self, values: np.ndarray) -> np.ndarray:
        """Per-class mean of per-sample values ``(N,)``, or of each row of ``(D, N)``; NaN for
        classes without test samples."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            sums = np.bincount(self.labels, weights=values, minlength=self.n_classes)
        else:
            sums = np.stack([np.bincount(self.labels, weights=row, minlength=self.n_classes)
                             for row in values])
        return divide(sums, self.n_test)

    def split_means(self, class_values: np.ndarray) -> np.ndarray:
        """Per-split mean over classes, for ``(C,)`` or ``(..., C)`` class values."""
        return np.stack([mean_over(class_values, self.members(s)) for s in self.splits], -1)


def divide(num, den):
    """``num / den`` with NaN where ``den == 0``, silently."""
    num = np.asarray(num, dtype=np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def mean_over(class_values, mask):
    """Mean over the masked classes (last axis); NaN when the mask is empty."""
    count = int(mask.sum())
    return divide(class_values[..., mask].sum(axis=-1), count)


def sample_frame(method, loss, cols, groups: Groups) -> pd.DataFrame:
    frame = pd.DataFrame({
        "method": method, "loss": loss, "sample": np.arange(groups.labels.shape[0]),
        "class": groups.labels, "split": groups.class_split[groups.labels]})
    for col, values in cols.items():  # the loss's columns (and plug-in twins, c2) in order
        frame[col] = values
    return frame


def class_frame(method, loss, class_values: dict, groups: Groups) -> pd.DataFrame:
    """One row per class; ``class_values``: column -> (C,) values (and ``_lo``/``_hi``)."""
    counts = (pd.array(groups.train_counts, dtype="Int64") if groups.train_counts is not None
              else pd.array([pd.NA] * groups.n_classes, dtype="Int64"))
    frame = pd.DataFrame({
        "method": method, "loss": loss, "class": np.arange(groups.n_classes),
        "class_name": groups.class_names, "train_count": counts, "split": groups.class_split,
        "n_test": groups.n_test})
    for col, values in class_values.items():
        frame[col] = values
    return frame


def split_frame(method, loss, split_values: dict, groups: Groups) -> pd.DataFrame:
    """One row per split; ``split_values``: column -> (S,) values in ``groups.splits`` order."""
    n_test = groups.n_test
    frame = pd.DataFrame({
        "method": method, "loss": loss, "split": list(groups.splits),
        "n_classes": [int(groups.members(s).sum()) for s in groups.splits],
        "n_test": [int(n_test[groups.members(s)].sum()) for s in groups.splits]})
    for col, values in split_values.items():
        frame[col] = values
    return frame


def model_frame(method, class_values: np.ndarray, groups: Groups) -> pd.DataFrame:
    """One row per (model, split); ``class_values``: ``(D, C)`` per-model class accuracies."""
    split_values = groups.split_means(class_values)
    n_models, n_splits = split_values.shape
    members = [groups.members(s) for s in groups.splits]
    return pd.DataFrame({
        "method": method, "model": np.repeat(np.arange(n_models), n_splits),
        "split": np.tile(list(groups.splits), n_models),
        "n_classes": np.tile([int(m.sum()) for m in members], n_models),
        "n_test": np.tile([int(groups.n_test[m].sum()) for m in members], n_models),
        "accuracy": split_values.ravel()})


def ordered_columns(frame: pd.DataFrame, key: list[str], values=None) -> pd.DataFrame:
    """Key columns, then each value column (``values``, default the decomposition's) followed
    by its interval bounds, if any."""
    values = [c for c in (values or columns_of("zero-one")) if c in frame.columns]
    ordered = [c for v in values for c in (v, f"{v}_lo", f"{v}_hi") if c in frame.columns]
    rest = [c for c in frame.columns if c not in key and c not in ordered]
    return frame[key + rest + ordered]
