"""Validation of the decomposition's inputs: loss names, the one prediction array, shapes."""

from __future__ import annotations

import numpy as np

from bvkit.decomposition.terms import LOSSES
from bvkit.errors import BvkitError

KINDS = ("logits", "probs", "preds")


def resolve_losses(loss) -> tuple[str, ...]:
    """``"all"``, one loss name or a sequence of names -> loss names in canonical order."""
    names = (LOSSES if loss == "all" else (loss,)) if isinstance(loss, str) else tuple(loss)
    unknown = [name for name in names if name not in LOSSES]
    if unknown or not names:
        raise BvkitError(
            f"unknown loss {', '.join(map(str, unknown)) or '(none)'}: "
            f"choose from {', '.join(LOSSES)} or all"
        )
    return tuple(name for name in LOSSES if name in names)


def pick_scores(logits=None, probs=None, preds=None) -> tuple[str, np.ndarray]:
    """The one prediction array given, with its kind."""
    arrays = zip(KINDS, (logits, probs, preds), strict=True)
    given = [(kind, arr) for kind, arr in arrays if arr is not None]
    if len(given) != 1:
        names = ", ".join(kind for kind, _ in given) or "none"
        raise BvkitError(f"give exactly one of logits, probs or preds (got {names})")
    return given[0]


def check_inputs(labels, scores, kind, train_counts=None, class_names=None) -> int:
    """Validate shapes and dtypes (everything but the per-element checks); return C."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise BvkitError(f"labels must be a 1-D integer array, got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    ndim = 2 if kind == "preds" else 3
    if scores.ndim != ndim:
        shape = "(D, N)" if kind == "preds" else "(D, N, C)"
        raise BvkitError(f"{kind} must have shape {shape}, got {tuple(scores.shape)}")
    if kind == "preds" and not np.issubdtype(scores.dtype, np.integer):
        raise BvkitError(f"preds must be integer class indices, got dtype {scores.dtype}")
    if kind != "preds" and not np.issubdtype(scores.dtype, np.floating):
        raise BvkitError(f"{kind} must be floating point, got dtype {scores.dtype}")
    n_models, n_samples = scores.shape[:2]
    if n_models < 2:
        raise BvkitError(f"{kind} hold {n_models} model(s); a decomposition needs at least 2")
    if labels.shape[0] != n_samples:
        raise BvkitError(f"labels hold {labels.shape[0]} samples but {kind} hold {n_samples}")
    if n_samples == 0:
        raise BvkitError("there are no test samples")
    n_classes = scores.shape[2] if kind != "preds" else None
    if n_classes == 0:
        raise BvkitError(f"{kind} have no classes (last axis of length 0)")
    for name, arr in (("train_counts", train_counts), ("class_names", class_names)):
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.ndim != 1:
            raise BvkitError(f"{name} must be 1-D, got shape {arr.shape}")
        if n_classes is None:
            n_classes = arr.shape[0]
        elif arr.shape[0] != n_classes:
            raise BvkitError(f"{name} has {arr.shape[0]} entries but there are {n_classes} classes")
    if train_counts is not None:
        counts = np.asarray(train_counts)
        if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
            raise BvkitError("train_counts must be non-negative integers")
    if n_classes is None:  # hard predictions without class metadata
        n_classes = int(max(labels.max(), _chunked_extreme(scores, np.max))) + 1
    if labels.min() < 0 or labels.max() >= n_classes:
        raise BvkitError(f"labels out of range: found {labels.min()}..{labels.max()}, "
                         f"classes are 0..{n_classes - 1}")
    return n_classes


def _chunked_extreme(arr, reduce, step=1 << 16):
    return reduce([reduce(arr[:, i:i + step]) for i in range(0, arr.shape[1], step)])
