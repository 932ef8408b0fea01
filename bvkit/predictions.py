"""Prediction files, the contract between whatever trains models and the decomposition
(``docs/formats.md``): ``labels (N,)`` int and exactly one of ``logits (D, N, C)``, ``probs (D,
N, C)`` or ``preds (D, N)``, optionally ``train_counts (C,)``, ``class_names (C,)`` and, for
multi-expert models (RIDE), ``expert_logits (D, M, N, C)``: each of the M experts' own logits
(``logits`` stays the model's real output) and, for a model that combines them with learned
weights (SADE), ``expert_weights (D, M)`` (rows >= 0 summing to 1; absent: the plain mean), as
an uncompressed ``.npz`` or a directory of ``.npy`` files.

This module writes them (the training run, the study and a user's own code all use
``save_predictions``); ``bvkit.decomposition.io`` reads them, memory-mapped. Pure numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bvkit.atomic import atomic_write
from bvkit.errors import BvkitError

SCORE_KEYS = ("logits", "probs", "preds")
OPTIONAL_KEYS = ("train_counts", "class_names", "expert_logits", "expert_weights")
#: how far a row of ``expert_weights`` may sum from 1
WEIGHT_SUM_TOLERANCE = 1e-4


def save_predictions(path, labels, logits=None, probs=None, preds=None, train_counts=None,
                     class_names=None, expert_logits=None, expert_weights=None) -> Path:
    """Write a prediction set: an uncompressed ``.npz`` if ``path`` ends in ``.npz``, else a
    directory of ``.npy`` files. Each file is written atomically (``bvkit.atomic``), so a
    reader never sees a half-written file."""
    path = Path(path)
    given = {k: v for k, v in zip(SCORE_KEYS, (logits, probs, preds), strict=True) if v is not None}
    if len(given) != 1:
        raise BvkitError(f"give exactly one of logits, probs or preds (got {sorted(given)})")
    arrays = {"labels": np.asarray(labels), **{k: np.asarray(v) for k, v in given.items()}}
    if train_counts is not None:
        arrays["train_counts"] = np.asarray(train_counts)
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)
    if expert_logits is not None:
        experts = np.asarray(expert_logits)
        scores = next(iter(given.values()))
        if "logits" not in given or experts.ndim != 4 or experts.shape[:1] + experts.shape[2:] != np.shape(scores):
            raise BvkitError(f"expert_logits must be (D, M, N, C) beside logits (D, N, C); got {experts.shape} "
                             f"beside {next(iter(given))} {np.shape(scores)}")
        arrays["expert_logits"] = experts
    if expert_weights is not None:
        if expert_logits is None:
            raise BvkitError("expert_weights need expert_logits beside them (the experts they weight)")
        arrays["expert_weights"] = check_expert_weights(expert_weights, arrays["expert_logits"].shape)
    for key, arr in arrays.items():
        if arr.dtype.hasobject:
            raise BvkitError(f"{key} is an object array; prediction files hold plain arrays only")
    if path.suffix == ".npz":
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.savez(f, **arrays))
    else:
        path.mkdir(parents=True, exist_ok=True)
        for stale in (*SCORE_KEYS, *OPTIONAL_KEYS):
            if stale not in arrays:
                (path / f"{stale}.npy").unlink(missing_ok=True)
        for key, arr in arrays.items():
            atomic_write(path / f"{key}.npy", lambda f, a=arr: np.save(f, a))
    return path


def check_expert_weights(weights, expert_shape) -> np.ndarray:
    """``weights`` as a float array, refused unless (D, M) beside ``expert_logits`` of shape
    ``expert_shape`` (D, M, N, C), finite, and each row >= 0 summing to 1."""
    weights = np.asarray(weights)
    if weights.dtype.kind not in "fiu" or weights.shape != tuple(expert_shape[:2]):
        raise BvkitError(f"expert_weights must be (D, M) = {tuple(expert_shape[:2])} numbers beside expert_logits "
                         f"(D, M, N, C); got {weights.shape} of dtype {weights.dtype}")
    rows = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(rows).all() or (rows < 0).any():
        raise BvkitError("expert_weights must be finite and >= 0")
    off = np.abs(rows.sum(axis=1) - 1)
    if (off > WEIGHT_SUM_TOLERANCE).any():
        raise BvkitError(f"expert_weights of model {int(off.argmax())} sum to {rows[off.argmax()].sum():.6g}, "
                         f"not 1 (tolerance {WEIGHT_SUM_TOLERANCE:g})")
    return weights
