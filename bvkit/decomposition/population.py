"""Population bias and variance from D models, with delete-one-subset jackknife intervals.

A building block for issue 29, not yet used by :func:`bvkit.decompose`, the CLI, the claims or
the figures (those still report the plug-in terms of ``terms.py``). Definitions and derivations:
``docs/bias_variance.md``, section "Population terms: finite-D corrections and the jackknife".

The D models of a study are D draws from a population of models (one per long-tailed training
set). The plug-in terms describe those D models; the estimators here target the population:

* :func:`squared_population_terms`: the Brier bias and variance corrected for finite D. The
  corrected variance ``V* = V D/(D-1)`` and bias ``B* = B - V*/D`` are U-statistics, unbiased
  for ``E||p - Ep||^2`` and ``||Ep - e_y||^2``; ``B* + V*`` is the plug-in error (the identity
  holds).
* :func:`cross_entropy_population_terms`: Yang et al.'s variance ``-log Z`` is a smooth function
  of the mean log-probability, so its delete-one jackknife bias correction removes the O(1/D)
  term; the bias is error minus that variance (the identity holds, the error is unbiased).
* :func:`jackknife` / :func:`paired_jackknife`: the delete-one-subset jackknife of any statistic
  of the D models (``statistic(keep)`` with ``keep`` the indices of the models kept), its
  standard error and a t interval with D - 1 degrees of freedom. Paired: a difference of two
  methods leaves out the same training set k in both.
* :func:`population_split_jackknife` / :func:`population_split_difference`: the two together
  for the split means (class means, then means over a split's classes, as ``grouping.py``).

These intervals cover the uncertainty from the choice of the D training sets with the test set
held fixed; combining them with the class-stratified test-sample bootstrap is left to the wiring.
Pure numpy (float64) plus ``scipy.stats.t`` for the quantile.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from bvkit.decomposition.grouping import Groups
from bvkit.decomposition.terms import PROBS_EPSILON, PROBS_TOLERANCE
from bvkit.errors import BvkitError

#: Columns of the per-sample and per-split population terms: corrected first, then plug-in.
POPULATION_COLUMNS = ("error", "bias", "variance", "bias_plugin", "variance_plugin")
POPULATION_LOSSES = ("squared", "cross-entropy")


class FewModelsWarning(UserWarning):
    """The jackknife over D = 2 training sets has 1 degree of freedom: very wide intervals."""


# ---------------------------------------------------------------------------------------------
# checks and inputs


def check_n_models(n_models: int, *, jackknife: bool = False) -> None:
    """Refuse D < 2 (no spread over training sets can be estimated from one model); with
    ``jackknife``, warn at D = 2 (:class:`FewModelsWarning`)."""
    if n_models < 2:
        raise BvkitError(f"population estimates need at least 2 models (training sets), "
                         f"got {n_models}")
    if jackknife and n_models == 2:
        warnings.warn("jackknife over D = 2 training sets: 1 degree of freedom, so the t "
                      "interval is very wide (t quantile 12.7 at 95 %), and corrected terms "
                      "have no leave-one-out value (NaN interval); train D >= 3 models",
                      FewModelsWarning, stacklevel=3)


def _log_probs(probs, logits) -> np.ndarray:
    """float64 log-probabilities ``(D, N, C)`` from exactly one of ``probs`` or ``logits``
    (probs clipped at ``PROBS_EPSILON`` and renormalised, as ``terms.py`` does)."""
    if (probs is None) == (logits is None):
        raise BvkitError("pass exactly one of probs or logits")
    scores = np.asarray(probs if logits is None else logits, dtype=np.float64)
    if scores.ndim != 3:
        raise BvkitError(f"scores must have shape (D, N, C), got {scores.shape}")
    if not np.isfinite(scores).all():
        raise BvkitError("scores contain NaN or inf")
    if logits is None:
        if scores.min() < 0:
            raise BvkitError("probs contain negative values")
        worst = np.abs(scores.sum(axis=2) - 1).max()
        if worst > PROBS_TOLERANCE:
            raise BvkitError(f"probs do not sum to 1 over classes (off by up to {worst:.3g})")
        scores = np.log(np.maximum(scores, PROBS_EPSILON))
    return scores - _logsumexp(scores)[..., None]


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.exp(x - top).sum(axis=-1))


def _labels(labels, n_samples: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_samples,):
        raise BvkitError(f"labels must have shape ({n_samples},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise BvkitError(f"labels must lie in 0..{n_classes - 1}")
    return labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# per-sample population terms


def squared_population_terms(labels, *, probs=None, logits=None) -> dict[str, np.ndarray]:
    """Per-sample population terms of the squared (Brier) loss from D >= 2 models.

    With ``p_d`` model d's probabilities (``probs (D, N, C)``, or the softmax of ``logits``),
    ``pbar`` their mean and ``e_y`` the one-hot label, per test sample:

    * ``variance_plugin`` ``V = mean_d ||p_d - pbar||^2``, ``bias_plugin`` ``B = ||pbar - e_y||^2``
      (the terms of ``terms.py``);
    * ``variance`` ``V* = V D / (D - 1)``: unbiased for the population variance
      ``E||p - Ep||^2``, since ``E[V] = (D - 1)/D E||p - Ep||^2`` (the D models' own mean
      absorbs one model's worth of spread);
    * ``bias`` ``B* = B - V*/D``: unbiased for ``||Ep - e_y||^2``, since
      ``E[B] = ||Ep - e_y||^2 + E||pbar - Ep||^2`` and ``E||pbar - Ep||^2`` = population
      variance / D, estimated unbiasedly by ``V*/D``. ``B*`` is the mean of
      ``<p_i - e_y, p_j - e_y>`` over pairs ``i != j`` (a U-statistic) and can be slightly
      negative when the bias is near 0; it is not clipped (clipping would bias it up);
    * ``error`` ``mean_d ||p_d - e_y||^2``, unbiased already; ``error = B* + V* = B + V``.

    Returns ``column -> (N,) float64`` for :data:`POPULATION_COLUMNS`. Derivation:
    ``docs/bias_variance.md``, "Population terms".
    """
    log_p = _log_probs(probs, logits)
    n_models, n_samples, n_classes = log_p.shape
    check_n_models(n_models)
    labels = _labels(labels, n_samples, n_classes)
    return _squared(np.exp(log_p), labels)


def _squared(p: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    n_models, n_samples, _ = p.shape
    rows = np.arange(n_samples)
    pbar = p.mean(axis=0)
    variance = ((p - pbar) ** 2).sum(axis=2).mean(axis=0)
    off = pbar.copy()
    off[rows, labels] -= 1
    bias = (off * off).sum(axis=1)
    p_label = p[:, rows, labels]
    error = ((p * p).sum(axis=2) - 2 * p_label + 1).mean(axis=0)
    if n_models >= 2:
        variance_c = variance * n_models / (n_models - 1)
        bias_c = bias - variance / (n_models - 1)
    else:  # a leave-one-out replicate of D = 2: nothing to correct with
        variance_c = bias_c = np.full(n_samples, np.nan)
    return {"error": error, "bias": bias_c, "variance": variance_c, "bias_plugin": bias,
            "variance_plugin": variance}


def cross_entropy_population_terms(labels, *, logits=None, probs=None) -> dict[str, np.ndarray]:
    """Per-sample population terms of the cross-entropy loss (Yang et al. 2020) from D >= 2.

    Plug-in: ``error = -mean_d log p_{d,y}``, ``variance_plugin = -log Z`` with
    ``log Z = logsumexp_c mean_d log p_{d,c}``, ``bias_plugin = error - variance_plugin``
    (``terms.py``). The population variance is ``-logsumexp_c E[log p_c]``, a smooth function of
    a mean, and ``logsumexp`` is convex, so the plug-in variance is low by a term of order 1/D.
    The delete-one jackknife removes it: with ``V_(k)`` the plug-in variance without model k,
    ``variance = D V - (D - 1) mean_k V_(k)`` (for the squared loss this same recipe gives
    exactly ``V*`` and ``B*``). The error is a mean over models, its own jackknife, so
    ``bias = error - variance`` keeps the identity. Not clipped: a corrected variance near 0
    can come out slightly negative. Returns ``column -> (N,)`` for :data:`POPULATION_COLUMNS`.
    """
    log_p = _log_probs(probs, logits)
    n_models, n_samples, n_classes = log_p.shape
    check_n_models(n_models)
    labels = _labels(labels, n_samples, n_classes)
    return _cross_entropy(log_p, labels)


def _cross_entropy(log_p: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    n_models, n_samples, _ = log_p.shape
    rows = np.arange(n_samples)
    mean = log_p.mean(axis=0)
    error = -mean[rows, labels]
    variance = -_logsumexp(mean)
    if n_models >= 2:
        loo_mean = (n_models * mean - log_p) / (n_models - 1)  # (D, N, C) without model k
        loo_variance = -_logsumexp(loo_mean).mean(axis=0)
        variance_c = n_models * variance - (n_models - 1) * loo_variance
    else:
        variance_c = np.full(n_samples, np.nan)
    return {"error": error, "bias": error - variance_c, "variance": variance_c,
            "bias_plugin": error - variance, "variance_plugin": variance}


_TERMS = {"squared": (_squared, np.exp), "cross-entropy": (_cross_entropy, lambda x: x)}


def population_terms(labels, *, probs=None, logits=None, loss="squared"):
    """:func:`squared_population_terms` or :func:`cross_entropy_population_terms` by name."""
    if loss == "squared":
        return squared_population_terms(labels, probs=probs, logits=logits)
    if loss == "cross-entropy":
        return cross_entropy_population_terms(labels, probs=probs, logits=logits)
    raise BvkitError(f"population terms exist for {', '.join(POPULATION_LOSSES)}, not {loss!r}")


# ---------------------------------------------------------------------------------------------
# delete-one-subset jackknife


@dataclass(frozen=True)
class Jackknife:
    """Delete-one-subset jackknife of a statistic of D models.

    ``estimate``: the statistic on all D models; ``replicates (D, ...)``: on the D - 1 models
    left when model k (training set k) is left out.
    """

    estimate: np.ndarray
    replicates: np.ndarray

    @property
    def n_models(self) -> int:
        return self.replicates.shape[0]

    @property
    def dof(self) -> int:
        """Degrees of freedom of the t interval, D - 1."""
        return self.n_models - 1

    @property
    def se(self) -> np.ndarray:
        """``sqrt((D - 1)/D sum_k (theta_k - mean theta)^2)``; NaN where a replicate is NaN."""
        return jackknife_se(self.replicates)

    @property
    def bias_corrected(self) -> np.ndarray:
        """``D theta - (D - 1) mean_k theta_k``: the estimate less the jackknife's estimate of
        its O(1/D) bias (for a corrected term of the squared loss: the estimate itself)."""
        d = self.n_models
        return d * self.estimate - (d - 1) * self.replicates.mean(axis=0)

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``estimate -/+ t_{D-1, (1+level)/2} se`` (:func:`t_interval`)."""
        return t_interval(self.estimate, self.se, self.dof, level)


def jackknife_se(replicates) -> np.ndarray:
    """Jackknife standard error from the ``(D, ...)`` leave-one-out values."""
    replicates = np.asarray(replicates, dtype=np.float64)
    d = replicates.shape[0]
    spread = ((replicates - replicates.mean(axis=0)) ** 2).sum(axis=0)
    return np.sqrt((d - 1) / d * spread)


def t_interval(estimate, se, dof: int, level: float = 0.95):
    """``(lo, hi) = estimate -/+ t.ppf((1 + level)/2, dof) * se`` (``scipy.stats.t``)."""
    if not 0 < level < 1:
        raise BvkitError(f"level must lie strictly between 0 and 1, got {level}")
    if dof < 1:
        raise BvkitError(f"a t interval needs at least 1 degree of freedom, got {dof}")
    half = stats.t.ppf((1 + level) / 2, dof) * np.asarray(se, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    return estimate - half, estimate + half


def jackknife(statistic: Callable[[np.ndarray], np.ndarray], n_models: int) -> Jackknife:
    """Jackknife of ``statistic(keep)`` (an array, any shape), ``keep`` the sorted indices of the
    models used: all D for the estimate, all but k for replicate k. D = 1 is refused, D = 2
    warns (:func:`check_n_models`)."""
    check_n_models(n_models, jackknife=True)
    every = np.arange(n_models)
    estimate = np.asarray(statistic(every), dtype=np.float64)
    replicates = np.stack([np.asarray(statistic(np.delete(every, k)), dtype=np.float64)
                           for k in range(n_models)])
    if replicates.shape[1:] != estimate.shape:
        raise BvkitError(f"statistic gave shape {replicates.shape[1:]} without a model, "
                         f"{estimate.shape} with all")
    return Jackknife(estimate, replicates)


def paired_jackknife(statistic_a, statistic_b, n_models: int) -> Jackknife:
    """Jackknife of ``statistic_a(keep) - statistic_b(keep)``: both methods leave out the same
    training set k, so what the two share through their training sets cancels (identical
    methods give a zero-width interval). Both must index their models by the same subsets."""
    return jackknife(lambda keep: np.asarray(statistic_a(keep), dtype=np.float64)
                     - np.asarray(statistic_b(keep), dtype=np.float64), n_models)


# ---------------------------------------------------------------------------------------------
# split means


def split_statistic(labels, *, probs=None, logits=None, loss="squared",
                    groups: Groups | None = None) -> tuple[Callable, int]:
    """``(statistic, D)``: ``statistic(keep)`` gives the ``(len(POPULATION_COLUMNS), S)`` split
    means (split order ``groups.splits``; without ``groups``, one split ``all``: the mean of
    the class means) of the per-sample population terms of the models ``keep``."""
    if loss not in _TERMS:
        raise BvkitError(f"population terms exist for {', '.join(POPULATION_LOSSES)}, "
                         f"not {loss!r}")
    log_p = _log_probs(probs, logits)
    n_models, n_samples, n_classes = log_p.shape
    check_n_models(n_models)
    labels = _labels(labels, n_samples, n_classes)
    groups = Groups.build(labels, n_classes) if groups is None else groups
    if not np.array_equal(groups.labels, labels):
        raise BvkitError("groups were built for other labels")
    per_sample, to_input = _TERMS[loss]
    scores = to_input(log_p)

    def statistic(keep):
        with np.errstate(invalid="ignore"):
            terms = per_sample(scores[keep], labels)
            values = np.stack([terms[c] for c in POPULATION_COLUMNS])
            return groups.split_means(groups.class_means(values))

    return statistic, n_models


def population_split_jackknife(labels, *, probs=None, logits=None, loss="squared",
                               groups: Groups | None = None) -> dict[str, Jackknife]:
    """Split means of the population terms with their jackknife over the D training sets:
    ``column -> Jackknife`` (estimate and replicates per split, ``groups.splits`` order) for
    :data:`POPULATION_COLUMNS`. At D = 2 the corrected ``bias`` and ``variance`` have no
    leave-one-out value (one model left): their ``se`` and interval are NaN."""
    statistic, n_models = split_statistic(labels, probs=probs, logits=logits, loss=loss,
                                          groups=groups)
    return _by_column(jackknife(statistic, n_models))


def population_split_difference(labels, *, probs_a=None, probs_b=None, logits_a=None,
                                logits_b=None, loss="squared",
                                groups: Groups | None = None) -> dict[str, Jackknife]:
    """``method a - method b`` split means of the population terms, paired by training set:
    model k of both methods was trained on subset k, and replicate k leaves it out of both.
    Same test labels; the same D."""
    stat_a, d_a = split_statistic(labels, probs=probs_a, logits=logits_a, loss=loss,
                                  groups=groups)
    stat_b, d_b = split_statistic(labels, probs=probs_b, logits=logits_b, loss=loss,
                                  groups=groups)
    if d_a != d_b:
        raise BvkitError(f"a paired difference needs the same training sets: {d_a} models "
                         f"against {d_b}")
    return _by_column(paired_jackknife(stat_a, stat_b, d_a))


def _by_column(result: Jackknife) -> dict[str, Jackknife]:
    return {col: Jackknife(result.estimate[i], result.replicates[:, i])
            for i, col in enumerate(POPULATION_COLUMNS)}
