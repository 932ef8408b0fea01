"""``decompose``: prediction arrays -> per-sample, per-class, per-split and per-model frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bvkit.data.profiles import FEW_SHOT, MANY_SHOT
from bvkit.decomposition import bootstrap as bs
from bvkit.decomposition import inputs, passes
from bvkit.decomposition.grouping import (
    Groups,
    class_frame,
    model_frame,
    ordered_columns,
    sample_frame,
    split_frame,
)
from bvkit.decomposition.io import PredictionSet, load_predictions
from bvkit.decomposition.terms import columns_of
from bvkit.errors import BvkitError

CLASS_KEY = ["method", "loss", "class", "class_name", "train_count", "split", "n_test"]
SPLIT_KEY = ["method", "loss", "split", "n_classes", "n_test"]


@dataclass
class Decomposition:
    """Tidy results of one or more methods' decompositions (``method`` column tells them apart).

    ``per_sample``: one row per (method, loss, test sample); ``per_class``: per (method, loss,
    class); ``per_split``: per (method, loss, split). ``settings``: method -> the arguments
    and sizes it was decomposed with. ``per_model``: per (method, model, split), each model's
    accuracy with the same classes and splits; their mean over models is ``per_split``'s.
    """

    per_sample: pd.DataFrame
    per_class: pd.DataFrame
    per_split: pd.DataFrame
    settings: dict = field(default_factory=dict)
    per_model: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.per_split["method"]))

    @property
    def losses(self) -> list[str]:
        return list(dict.fromkeys(self.per_split["loss"]))

    @classmethod
    def concat(cls, parts) -> "Decomposition":
        """Stack decompositions of different methods (on the same or different test sets)."""
        parts = list(parts)
        if not parts:
            raise BvkitError("no decompositions to combine")
        names = [m for p in parts for m in p.methods]
        dupes = sorted({m for m in names if names.count(m) > 1})
        if dupes:
            raise BvkitError(f"method name used twice: {', '.join(dupes)} (use distinct names)")
        frames = {attr: pd.concat([getattr(p, attr) for p in parts], ignore_index=True)
                  for attr in ("per_sample", "per_class", "per_split", "per_model")}
        return cls(settings={m: s for p in parts for m, s in p.settings.items()}, **frames)

    def __repr__(self) -> str:
        return (f"Decomposition(methods={self.methods}, losses={self.losses}, "
                f"classes={self.per_class['class'].nunique()}, "
                f"samples={self.per_sample['sample'].nunique()})")


def decompose(
    labels,
    logits=None,
    probs=None,
    preds=None,
    *,
    train_counts=None,
    class_names=None,
    loss="squared",
    many: int = MANY_SHOT,
    few: int = FEW_SHOT,
    bootstrap: int = 0,
    bootstrap_models: bool = False,
    level: float = 0.95,
    seed: int = 0,
    method: str = "model",
    chunk_size: int | None = None,
    n_jobs: int | None = None,
) -> Decomposition:
    """Bias-variance decomposition of D models' predictions on one test set.

    Give ``labels (N,)`` and one of ``logits (D, N, C)``, ``probs (D, N, C)`` or hard ``preds
    (D, N)`` (numpy arrays, memory-mapped ones welcome: they are read in chunks of
    ``chunk_size`` test samples on ``n_jobs`` threads). ``loss``: ``"squared"`` (Brier,
    default), ``"zero-one"``, ``"cross-entropy"``, a list, or ``"all"`` (the three; squared and
    zero-one for hard ``preds``, which have no cross-entropy). ``train_counts (C,)``
    gives the many/medium/few splits (``n > many``, ``n < few``). ``bootstrap=B`` adds
    ``<column>_lo``/``_hi`` percentile intervals at ``level``, resampling test samples within
    classes (and the models too with ``bootstrap_models``), seeded by ``seed``. Definitions
    and frames: ``docs/bias_variance.md``.

    With ``bootstrap_models`` a replicate holds repeated models, which shrinks the plug-in
    variance (by about (D-1)/D on average), so with few models its interval sits below the
    point estimate; it shows the spread due to the choice of models, not a centred interval.
    Its cost is B recomputations of the per-sample terms (cross-entropy: B x D x N x C
    multiply-adds), done in one chunked pass.
    """
    losses = inputs.resolve_losses(loss)
    kind, scores = inputs.pick_scores(logits, probs, preds)
    if loss == "all" and kind == "preds":  # "all" that hard predictions support
        losses = tuple(name for name in losses if name != "cross-entropy")
    if kind == "preds" and "cross-entropy" in losses:
        raise BvkitError("cross-entropy needs scores (logits or probs), not hard preds")
    if not isinstance(scores, np.ndarray):
        scores = np.asarray(scores)
    labels = np.asarray(labels)
    n_classes = inputs.check_inputs(labels, scores, kind, train_counts, class_names)
    if few > many + 1:
        raise BvkitError(f"few ({few}) must not exceed many + 1 ({many + 1})")
    bs.check_bootstrap(bootstrap, level)
    if int(seed) != seed or seed < 0:
        raise BvkitError(f"seed must be a non-negative integer, got {seed}")
    if chunk_size is not None and chunk_size < 1:
        raise BvkitError(f"chunk_size must be at least 1, got {chunk_size}")
    groups = Groups.build(labels, n_classes, train_counts, class_names, many, few)

    correct = np.empty(scores.shape[:2], dtype=bool)
    values = passes.sample_terms(labels, scores, kind, n_classes, losses, chunk_size, n_jobs,
                                 correct=correct)
    resamples = bs.Resamples.draw(labels, bootstrap, seed) if bootstrap else None
    replicate_sums = None
    if bootstrap and bootstrap_models:
        weights = bs.model_weights(scores.shape[0], bootstrap, (seed, 1))
        replicate_sums = passes.replicate_class_sums(labels, scores, kind, n_classes, losses,
                                                     weights, resamples.by_sample(),
                                                     chunk_size, n_jobs)
    samples, classes, splits = [], [], []
    interval_cache = {}  # accuracy is the same under every loss: bootstrap it once

    def interval_cols(name, col):
        key = col if col == "accuracy" else (name, col)
        if key not in interval_cache:
            reps = (bs.sums_to_means(replicate_sums[name][col], groups) if replicate_sums
                    else bs.class_replicates(values[name][col], groups, resamples))
            interval_cache[key] = ({}, {})
            bs.add_intervals(*interval_cache[key], col, reps, groups, level)
        return interval_cache[key]

    for name in losses:
        cols = values[name]
        class_cols = {c: groups.class_means(cols[c]) for c in columns_of(name)}
        split_cols = {c: groups.split_means(v) for c, v in class_cols.items()}
        for c in columns_of(name) if bootstrap else ():
            class_bounds, split_bounds = interval_cols(name, c)
            class_cols.update(class_bounds)
            split_cols.update(split_bounds)
        samples.append(sample_frame(method, name, cols, groups))
        classes.append(ordered_columns(class_frame(method, name, class_cols, groups), CLASS_KEY))
        splits.append(ordered_columns(split_frame(method, name, split_cols, groups), SPLIT_KEY))
    settings = {method: dict(
        loss=list(losses), many=many, few=few, bootstrap=bootstrap,
        bootstrap_models=bootstrap_models, level=level, seed=seed, kind=kind,
        n_models=int(scores.shape[0]), n_samples=int(labels.shape[0]), n_classes=n_classes)}
    return Decomposition(
        pd.concat(samples, ignore_index=True),
        pd.concat(classes, ignore_index=True),
        pd.concat(splits, ignore_index=True),
        settings,
        model_frame(method, groups.class_means(correct), groups),
    )


def decompose_file(path, name=None, **kwargs) -> Decomposition:
    """:func:`decompose` on a prediction file (``.npz`` or a directory of ``.npy``), or on a
    :class:`~bvkit.decomposition.io.PredictionSet` already read."""
    pset = path if isinstance(path, PredictionSet) else load_predictions(path, name=name)
    try:
        return decompose(method=name or pset.name, **pset.arrays(), **kwargs)
    except BvkitError as err:
        raise BvkitError(f"{pset.path or pset.name}: {err}") from None
