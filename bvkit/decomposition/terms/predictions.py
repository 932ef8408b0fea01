"""Per-sample terms from hard predictions ``(D, n)``: Domingos' zero-one terms and the squared
(Brier) terms of one-hot vectors, for the D models or for B weighted replicates of them."""

from __future__ import annotations

import numpy as np

from bvkit.errors import BvkitError


def accuracy(yhat: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample share of models predicting the label: ``(D, n) -> (n,)``."""
    return (yhat == labels).mean(axis=0)


def _votes(preds: np.ndarray, weights=None) -> np.ndarray:
    """``votes[..., d, n]``: (weighted) number of models predicting what model d predicts."""
    same = preds[:, None, :] == preds[None, :, :]
    if weights is None:
        return same.sum(axis=1)
    return np.einsum("be,den->bdn", weights, same.astype(weights.dtype))


def main_prediction(preds: np.ndarray, votes: np.ndarray | None = None) -> np.ndarray:
    """Most frequent prediction over models, ties to the smallest class: ``(D, n) -> (n,)``."""
    votes = _votes(preds) if votes is None else votes
    top = votes.max(axis=-2, keepdims=True)
    return np.where(votes == top, preds, np.iinfo(np.int64).max).min(axis=-2)


def zero_one_from_preds(preds: np.ndarray, labels: np.ndarray, weights=None) -> dict:
    """Domingos' zero-one terms from hard predictions ``(D, n)``.

    Per sample: ``error = bias + c2 * variance``; ``net_variance = c2 * variance`` so that its
    group mean is Domingos' net variance (``variance_unbiased - varc``). ``weights (B, D)``
    (model multiplicities of B bootstrap replicates) gives ``(B, n)`` terms.
    """
    preds = np.asarray(preds, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n_models = preds.shape[0]
    votes = _votes(preds, weights)
    main = main_prediction(preds, votes)
    right = preds == labels
    n_right = right.sum(axis=0) if weights is None else weights @ right.astype(weights.dtype)
    n_off_main = n_models - votes.max(axis=-2)
    bias = (main != labels).astype(np.float64)
    variance = n_off_main / n_models
    # c2 = 1 if unbiased, else -P(yhat = y | yhat != m), 0 when no model leaves m
    c2 = np.ones_like(variance)
    biased = bias == 1
    c2[biased] = -np.divide(n_right[biased], n_off_main[biased],
                            out=np.zeros(int(biased.sum())), where=n_off_main[biased] > 0)
    return {
        "accuracy": n_right / n_models,
        "error": 1 - n_right / n_models,
        "bias": bias,
        "variance": variance,
        "c2": c2,
        "variance_unbiased": (1 - bias) * variance,
        "variance_biased": bias * variance,
        "net_variance": c2 * variance,
    }


def squared_terms_from_preds(preds: np.ndarray, labels: np.ndarray, weights=None):
    """Squared (Brier) terms of one-hot predictions ``(D, n)``; exact in float64."""
    preds = np.asarray(preds, dtype=np.int64)
    n_models = preds.shape[0]
    votes = _votes(preds, weights)
    right = preds == labels
    if weights is None:
        weights_ = np.ones((1, n_models))
        n_right = right.sum(axis=0)
        votes_sq = votes.sum(axis=0)
    else:
        weights_ = weights
        n_right = weights @ right.astype(weights.dtype)
        votes_sq = np.einsum("bd,bdn->bn", weights_, votes)
    mean_sq = votes_sq / n_models**2  # ||pbar||^2
    p_label = n_right / n_models
    bias = mean_sq - 2 * p_label + 1
    return {"accuracy": p_label, "error": 2 * (1 - p_label), "bias": bias,
            "variance": 1 - mean_sq}


def pred_terms(preds: np.ndarray, labels: np.ndarray, losses=("squared", "zero-one")):
    """Per-sample terms from hard predictions ``(D, n)`` (squared on one-hot vectors)."""
    if "cross-entropy" in losses:
        raise BvkitError("cross-entropy needs scores (logits or probs), not hard preds")
    terms = {}
    if "zero-one" in losses:
        terms["zero-one"] = zero_one_from_preds(preds, labels)
    if "squared" in losses:
        terms["squared"] = squared_terms_from_preds(preds, labels)
    return terms


def weighted_pred_terms(preds, labels, weights, losses=("squared", "zero-one")):
    """:func:`pred_terms` for B replicates of the models (``weights (B, D)``)."""
    if "cross-entropy" in losses:
        raise BvkitError("cross-entropy needs scores (logits or probs), not hard preds")
    weights = np.asarray(weights, dtype=np.float64)
    terms = {}
    if "zero-one" in losses:
        terms["zero-one"] = zero_one_from_preds(preds, labels, weights)
    if "squared" in losses:
        terms["squared"] = squared_terms_from_preds(preds, labels, weights)
    return terms
