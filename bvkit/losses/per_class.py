"""The per-class vectors the losses are built from (pure numpy maths): the checked counts,
class-balanced weights, LDAM margins, the log prior, SADE's inverse prior and RIDE's
distribution-aware temperatures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bvkit.errors import BvkitError


def as_counts(class_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``class_counts`` as a float64 array, checked: 1-D, at least 1 class, all counts > 0."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 1:
        raise BvkitError(f"class_counts must be a non-empty 1-D sequence, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts <= 0):
        raise BvkitError("class_counts must be finite and > 0 for every class")
    return counts


def class_balanced_weights(class_counts, beta: float = 0.9999) -> np.ndarray:
    """Effective-number weights ``(1-beta)/(1-beta**n_c)``, normalised to sum to C."""
    counts = as_counts(class_counts)
    if not 0.0 <= beta < 1.0:
        raise BvkitError(f"beta must be in [0, 1), got {beta}")
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * counts.size


def ldam_margins(class_counts, max_margin: float = 0.5) -> np.ndarray:
    """LDAM margins ``m_c = K / n_c**0.25`` with K such that ``max m = max_margin``."""
    margins = as_counts(class_counts) ** -0.25
    return margins * (max_margin / margins.max())


def log_prior(class_counts) -> np.ndarray:
    counts = as_counts(class_counts)
    return np.log(counts / counts.sum())


def inverse_prior(class_counts) -> np.ndarray:
    """SADE's "inverse" prior: the sorted prior values handed out in reverse order, so the
    class with the k-th smallest prior gets the k-th largest value (ties broken by class index,
    a stable sort)."""
    counts = as_counts(class_counts)
    prior = counts / counts.sum()
    order = np.argsort(prior, kind="stable")  # ascending
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return np.sort(prior)[order.size - 1 - rank]


def diversity_temperatures(
    class_counts, gamma: float = 0.05, alpha: float = 1.0, form: str = "code"
) -> np.ndarray:
    """RIDE's per-class temperatures from ``beta_c = gamma * C * pi_c + (1 - gamma)``."""
    counts = as_counts(class_counts)
    beta = gamma * counts.size * counts / counts.sum() + (1.0 - gamma)
    if form == "code":
        temperatures = alpha * beta / beta.max()
    elif form == "paper":
        temperatures = alpha * (beta + 1.0 - beta.max())
    else:
        raise BvkitError(f"unknown temperature form {form!r} (expected 'code' or 'paper')")
    if np.any(temperatures <= 0):
        raise BvkitError(f"gamma={gamma} makes some temperatures <= 0")
    return temperatures
