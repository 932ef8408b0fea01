"""Differences between methods and a reference method, with paired intervals.

The difference of two class means is the class mean of per-sample differences, so one paired
bootstrap of the differences (the same resampled test samples for both methods, which needs one
test set) gives intervals of each difference; "comparable" is when an interval covers 0. Methods
decomposed with the population estimator are paired over training sets too: the difference's
jackknife leaves the same subset k out of both (``Decomposition.leave_one_out``), and the
interval is :func:`bvkit.decomposition.population.combined_interval`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bvkit.data.profiles import ALL, SPLITS_WITH_ALL
from bvkit.decomposition import bootstrap as bs
from bvkit.decomposition.grouping import Groups, class_frame, ordered_columns, split_frame
from bvkit.decomposition.result import CLASS_KEY, SPLIT_KEY, Decomposition
from bvkit.decomposition.terms import columns_of
from bvkit.errors import BvkitError


@dataclass
class Comparison:
    """``method - reference`` per class and per split (tidy, with ``reference`` column)."""

    per_class: pd.DataFrame
    per_split: pd.DataFrame


@dataclass
class _Pair:
    """One method's and the reference's per-sample rows of one loss, on one test set."""

    method: str
    loss: str
    mine: pd.DataFrame
    ref: pd.DataFrame
    groups: Groups
    mine_loo: dict | None = None  # column -> (D, N) without training set k, population only
    ref_loo: dict | None = None

    def difference(self, column: str) -> np.ndarray:
        return self.mine[column].to_numpy(float) - self.ref[column].to_numpy(float)

    def leave_one_out(self, column: str) -> np.ndarray | None:
        """``(D, C)`` class means of the difference without training set k (the same k left
        out of both methods), or None unless both have the population estimator's terms."""
        if not self.mine_loo or not self.ref_loo or column not in self.mine_loo:
            return None
        mine, ref = self.mine_loo[column], self.ref_loo[column]
        if mine.shape != ref.shape:
            raise BvkitError(f"methods {self.method!r} and its reference have {mine.shape[0]} "
                             f"and {ref.shape[0]} models: a difference is paired by training "
                             f"set and needs the same subsets (or estimator='plugin')")
        return self.groups.class_means(mine - ref)


def compare(decompositions, reference: str = "ce", *, bootstrap: int = 0, seed: int = 0,
            level: float = 0.95, columns=None) -> Comparison:
    """Each method's difference to ``reference`` per (loss, class) and per (loss, split).

    ``decompositions``: a :class:`Decomposition` holding several methods, or a sequence of
    them. Columns are those of the decompositions' frames (or ``columns``), holding
    ``method - reference``; ``bootstrap=B`` adds paired percentile intervals
    ``<column>_lo``/``_hi`` at ``level`` (class-stratified resampling of test samples, seeded
    like :func:`bvkit.decomposition.decompose`).
    """
    bs.check_bootstrap(bootstrap, level)
    class_rows, split_rows = [], []
    resamples = None
    for pair in _pairs(decompositions, reference):
        if bootstrap and resamples is None:
            resamples = bs.Resamples.draw(pair.groups.labels, bootstrap, seed)
        groups = pair.groups
        cls_cols, split_cols = {}, {}
        for col in columns or columns_of(pair.loss):
            diff = pair.difference(col)
            cls_cols[col] = groups.class_means(diff)
            split_cols[col] = groups.split_means(cls_cols[col])
            if bootstrap:
                reps = bs.class_replicates(diff, groups, resamples)
                bs.add_intervals(cls_cols, split_cols, col, reps, groups, level,
                                 estimate=cls_cols[col], leave_one_out=pair.leave_one_out(col))
        class_rows.append(_with_reference(class_frame(pair.method, pair.loss, cls_cols, groups),
                                          reference))
        split_rows.append(_with_reference(split_frame(pair.method, pair.loss, split_cols, groups),
                                          reference))
    key_class = ["method", "reference"] + CLASS_KEY[1:]
    key_split = ["method", "reference"] + SPLIT_KEY[1:]
    return Comparison(
        ordered_columns(pd.concat(class_rows, ignore_index=True), key_class),
        ordered_columns(pd.concat(split_rows, ignore_index=True), key_split),
    )


def difference_replicates(decompositions, method: str, reference: str, column: str, *,
                          bootstrap: int, seed: int = 0, loss: str | None = None) -> np.ndarray:
    """``(B, C)`` bootstrap replicates of the per-class ``method - reference`` differences of
    ``column``: the paired resamples :func:`compare` draws with the same ``seed``."""
    if int(bootstrap) != bootstrap or bootstrap < 1:
        raise BvkitError(f"bootstrap must be a positive integer, got {bootstrap}")
    for pair in _pairs(decompositions, reference):
        if pair.method == method and loss in (None, pair.loss):
            resamples = bs.Resamples.draw(pair.groups.labels, bootstrap, seed)
            return bs.class_replicates(pair.difference(column), pair.groups, resamples)
    raise BvkitError(f"no {loss or ''} decomposition of {method!r} to compare with {reference!r}")


def difference_leave_one_out(decompositions, method: str, reference: str, column: str, *,
                             loss: str | None = None) -> np.ndarray | None:
    """``(D, C)`` per-class ``method - reference`` differences of ``column`` with training set
    k left out of both (row k), or None unless both were decomposed with the population
    estimator: the jackknife half of the paired intervals of :func:`compare`."""
    for pair in _pairs(decompositions, reference):
        if pair.method == method and loss in (None, pair.loss):
            return pair.leave_one_out(column)
    raise BvkitError(f"no {loss or ''} decomposition of {method!r} to compare with {reference!r}")


def _pairs(decompositions, reference: str):
    """Every (method, loss) the reference shares, checked to be on the reference's test set."""
    if not isinstance(decompositions, Decomposition):
        decompositions = Decomposition.concat(decompositions)
    samples, classes = decompositions.per_sample, decompositions.per_class
    methods = decompositions.methods
    if reference not in methods:
        raise BvkitError(f"reference method {reference!r} not among the methods "
                         f"({', '.join(methods)})")
    if len(methods) < 2:
        raise BvkitError("a comparison needs at least two methods")
    ref_samples = samples[samples["method"] == reference]
    ref_classes = classes[classes["method"] == reference]
    found = False
    for method in methods:
        if method == reference:
            continue
        for loss in dict.fromkeys(samples.loc[samples["method"] == method, "loss"]):
            ref = ref_samples[ref_samples["loss"] == loss]
            if ref.empty:
                continue
            mine = samples[(samples["method"] == method) & (samples["loss"] == loss)]
            mine_classes = classes[(classes["method"] == method) & (classes["loss"] == loss)]
            ref_cls = ref_classes[ref_classes["loss"] == loss]
            _check_same_test_set(method, reference, mine, ref, mine_classes, ref_cls)
            found = True
            yield _Pair(method, loss, mine, ref, _groups_from(ref_cls, ref["class"].to_numpy()),
                        decompositions.leave_one_out.get((method, loss)),
                        decompositions.leave_one_out.get((reference, loss)))
    if not found:
        raise BvkitError(f"no loss is shared between {reference!r} and the other methods")


def _with_reference(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    frame.insert(1, "reference", reference)
    return frame


def _check_same_test_set(method, reference, mine, ref, mine_classes, ref_classes):
    same_labels = len(mine) == len(ref) and np.array_equal(mine["class"].to_numpy(),
                                                            ref["class"].to_numpy())
    if not same_labels:
        raise BvkitError(f"methods {method!r} and {reference!r} were not evaluated on the same "
                         f"test set (labels differ); a paired comparison needs one test set")
    same_splits = np.array_equal(mine_classes["split"].to_numpy(),
                                 ref_classes["split"].to_numpy())
    if not same_splits:
        raise BvkitError(f"methods {method!r} and {reference!r} have different train_counts "
                         f"(shot splits differ)")


def _groups_from(class_rows: pd.DataFrame, labels: np.ndarray) -> Groups:
    counts = class_rows["train_count"]
    has_counts = counts.notna().all()
    names = (class_rows["class_name"] if "class_name" in class_rows else class_rows["class"])
    return Groups(
        labels=labels.astype(np.int64), n_classes=len(class_rows),
        train_counts=counts.to_numpy(dtype=np.int64) if has_counts else None,
        class_names=names.to_numpy().astype(str),
        class_split=class_rows["split"].to_numpy().astype(str),
        splits=SPLITS_WITH_ALL if has_counts else (ALL,))
