"""Population bias and variance from D models: finite-D corrections by the delete-one-subset
jackknife, and intervals over the D training sets (``docs/bias_variance.md``, "Population
terms").

The D models of a study are D draws from a population of models (one per long-tailed training
set). The plug-in terms of ``terms`` describe those D models; the estimators here target the
population, and :func:`bvkit.decompose` reports them by default when D >= 3
(``estimator="auto"``; ``"plugin"`` keeps the plug-in terms, ``"population"`` asks for these):

* :func:`jackknife_terms`: Quenouille's delete-one bias correction of every per-sample term,
  ``theta* = D theta - (D - 1) mean_k theta_(k)`` with ``theta_(k)`` the plug-in term of the
  D - 1 models left without training set k, and the corrected terms of those D - 1 models
  (from the models left without k and j), which the intervals need. The correction is linear
  and leaves a mean over models (error, accuracy) unchanged, so every identity of the plug-in
  terms (``error = bias + variance``; zero-one's ``error = bias + net_variance``) holds for the
  corrected ones. Squared loss: it gives exactly ``V* = V D/(D-1)`` and ``B* = B - V*/D``, both
  unbiased (U-statistics). Cross-entropy: Yang et al.'s variance is a smooth function of the
  mean log-probability, and the correction removes its O(1/D) bias. Zero-one: the main
  prediction is not a smooth function of the models, and the correction is a first-order one
  there (measured: ``experiments/results/coverage.md``).
* :class:`Jackknife` / :func:`jackknife` / :func:`paired_jackknife`: the delete-one-subset
  jackknife of any statistic, its standard error and a t interval with D - 1 degrees of
  freedom. Paired: a difference of two methods leaves out the same training set k in both.
* :func:`combined_interval`: the jackknife's variance (training sets) plus the class-stratified
  test-sample bootstrap's (test samples), with a Welch-Satterthwaite t quantile: the interval
  ``decompose``, ``compare`` and the claims report for the population terms.
* :func:`population_terms`, :func:`population_split_jackknife`,
  :func:`population_split_difference`: the same on in-memory arrays (tests, simulations).

Pure numpy on the kernel of ``terms`` plus ``scipy.stats.t`` for the quantile.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from bvkit.decomposition import terms as T
from bvkit.decomposition.grouping import Groups
from bvkit.errors import BvkitError

ESTIMATORS = ("auto", "population", "plugin")
#: The columns the finite-D correction changes, per loss; the others are means over models.
CORRECTED = {
    "squared": ("bias", "variance"),
    "zero-one": ("bias", "variance", "variance_unbiased", "variance_biased", "net_variance"),
    "cross-entropy": ("bias", "variance"),
}
#: Columns of :func:`population_terms` and the split jackknife: corrected first, then plug-in.
POPULATION_COLUMNS = ("error", "bias", "variance", "bias_plugin", "variance_plugin")
POPULATION_LOSSES = ("squared", "zero-one", "cross-entropy")
#: Smallest D for which ``estimator="auto"`` reports the population terms.
AUTO_MIN_MODELS = 3


class FewModelsWarning(UserWarning):
    """The jackknife over D = 2 training sets has 1 degree of freedom: very wide intervals."""


def plugin_column(column: str) -> str:
    """The name of a corrected column's plug-in twin (``variance`` -> ``variance_plugin``)."""
    return f"{column}_plugin"


def population_columns(loss: str) -> tuple[str, ...]:
    """Value columns of a population decomposition: the loss's own columns (corrected where
    :data:`CORRECTED` says), then the plug-in twins of the corrected ones."""
    return T.columns_of(loss) + tuple(plugin_column(c) for c in CORRECTED[loss])


# ---------------------------------------------------------------------------------------------
# checks


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


def resolve_estimator(estimator: str, n_models: int, *, bootstrap_models: bool = False) -> str:
    """``"population"`` or ``"plugin"``. ``"auto"``: population for D >= 3 (and not with
    ``bootstrap_models``, which resamples the plug-in terms' models), else plug-in, with a
    :class:`FewModelsWarning` at D = 2. ``"population"`` at D = 2 warns and gives NaN
    intervals for the corrected terms; with ``bootstrap_models`` it is refused."""
    if estimator not in ESTIMATORS:
        raise BvkitError(f"unknown estimator {estimator!r} (choose from {', '.join(ESTIMATORS)})")
    if estimator == "plugin":
        return "plugin"
    if bootstrap_models:
        if estimator == "population":
            raise BvkitError("bootstrap_models resamples the models of the plug-in terms; the "
                             "population estimator's intervals come from the jackknife over "
                             "training sets: use one or the other")
        return "plugin"
    if estimator == "auto" and n_models < AUTO_MIN_MODELS:
        warnings.warn(f"{n_models} models: too few for the population estimates and their "
                      f"intervals (D >= {AUTO_MIN_MODELS}); reporting the plug-in terms of "
                      f"these models", FewModelsWarning, stacklevel=3)
        return "plugin"
    check_n_models(n_models, jackknife=True)
    return "population"


# ---------------------------------------------------------------------------------------------
# the jackknife-corrected per-sample terms


def leave_out_sets(n_models: int) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """``(every, without_one, without_two)``: all D model indices; the D index sets without
    model k; ``{(k, j): indices without k and j}`` for k < j (empty at D = 2)."""
    every = np.arange(n_models)
    without_one = [np.delete(every, k) for k in range(n_models)]
    without_two = ({} if n_models < 3 else
                   {(k, j): np.delete(every, [k, j])
                    for k, j in itertools.combinations(range(n_models), 2)})
    return every, without_one, without_two


@dataclass
class JackknifeTerms:
    """Per-sample terms of one loss, plug-in and corrected, with and without each model.

    ``plugin`` / ``corrected``: column -> (n,); ``plugin_loo`` / ``corrected_loo``: column ->
    (D, n), row k computed without model k (corrected: from those D - 1 models' own
    correction, NaN at D = 2).
    """

    plugin: dict
    corrected: dict
    plugin_loo: dict
    corrected_loo: dict


def jackknife_terms(term_fn: Callable[[np.ndarray], dict], n_models: int,
                    corrected: dict = CORRECTED) -> dict[str, JackknifeTerms]:
    """Jackknife-correct the per-sample terms ``term_fn(keep) -> {loss: {column: (n,)}}`` of
    the models ``keep`` (sorted indices). The columns of ``corrected[loss]`` get
    ``D theta - (D - 1) mean_k theta_(k)``; every other column is a mean over models and is
    its own correction. Returns ``loss -> JackknifeTerms``."""
    check_n_models(n_models)
    every, without_one, without_two = leave_out_sets(n_models)
    full = term_fn(every)
    loo = [term_fn(keep) for keep in without_one]
    pairs = {key: term_fn(keep) for key, keep in without_two.items()}
    d = n_models
    out = {}
    for loss, cols in full.items():
        plugin, fixed, plugin_loo, fixed_loo = {}, {}, {}, {}
        for col, theta in cols.items():
            theta = np.asarray(theta, dtype=np.float64)
            theta_k = np.stack([np.asarray(part[loss][col], dtype=np.float64) for part in loo])
            plugin[col], plugin_loo[col] = theta, theta_k
            if col not in corrected.get(loss, ()):
                fixed[col], fixed_loo[col] = theta, theta_k
                continue
            fixed[col] = d * theta - (d - 1) * theta_k.mean(axis=0)
            if d < 3:  # one model left: no correction of the leave-one-out values
                fixed_loo[col] = np.full_like(theta_k, np.nan)
                continue
            mean_kj = np.zeros_like(theta_k)
            for (k, j), part in pairs.items():
                value = np.asarray(part[loss][col], dtype=np.float64)
                mean_kj[k] += value
                mean_kj[j] += value
            mean_kj /= d - 1
            fixed_loo[col] = (d - 1) * theta_k - (d - 2) * mean_kj
        out[loss] = JackknifeTerms(plugin, fixed, plugin_loo, fixed_loo)
    return out


def _kernel_terms(labels, scores, kind, losses) -> Callable[[np.ndarray], dict]:
    """``keep -> {loss: {column: (n,)}}``: the plug-in terms of ``terms`` of the models
    ``keep`` (:func:`bvkit.decomposition.terms.subset_terms`)."""
    if kind == "preds":
        return T.subset_terms(scores.astype(np.int64), labels, losses, kind)
    block = np.empty(scores.shape, np.float32)
    T.to_float32(scores, block)
    return T.subset_terms(block, labels, losses, kind, T.finite_limit(scores.dtype))


def _arrays(labels, probs, logits, preds, loss):
    given = {k: v for k, v in (("probs", probs), ("logits", logits), ("preds", preds))
             if v is not None}
    if len(given) != 1:
        raise BvkitError(f"pass exactly one of logits, probs or preds (got {sorted(given)})")
    if loss not in POPULATION_LOSSES:
        raise BvkitError(f"population terms exist for {', '.join(POPULATION_LOSSES)}, "
                         f"not {loss!r}")
    (kind, scores), = given.items()
    scores = np.asarray(scores)
    if scores.ndim != (2 if kind == "preds" else 3):
        raise BvkitError(f"{kind} must have shape {'(D, N)' if kind == 'preds' else '(D, N, C)'}"
                         f", got {scores.shape}")
    labels = np.asarray(labels)
    if labels.shape != scores.shape[1:2]:
        raise BvkitError(f"labels must have shape ({scores.shape[1]},), got {labels.shape}")
    check_n_models(scores.shape[0])
    return labels.astype(np.int64), scores, kind


def population_terms(labels, *, probs=None, logits=None, preds=None, loss="squared"
                     ) -> dict[str, np.ndarray]:
    """Per-sample ``error``, corrected ``bias`` and ``variance`` and their plug-in twins
    (:data:`POPULATION_COLUMNS`) of one loss from D >= 2 models' ``probs``, ``logits`` (D, N,
    C) or hard ``preds`` (D, N)."""
    labels, scores, kind = _arrays(labels, probs, logits, preds, loss)
    result = jackknife_terms(_kernel_terms(labels, scores, kind, (loss,)), scores.shape[0])[loss]
    out = {col: result.corrected[col] for col in ("error", "bias", "variance")}
    out.update({plugin_column(col): result.plugin[col] for col in ("bias", "variance")})
    return out


# ---------------------------------------------------------------------------------------------
# delete-one-subset jackknife and intervals


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

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``estimate -/+ t_{D-1, (1+level)/2} se`` (:func:`t_interval`)."""
        return t_interval(self.estimate, self.se, self.dof, level)


def jackknife_se(replicates) -> np.ndarray:
    """Jackknife standard error from the ``(D, ...)`` leave-one-out values."""
    replicates = np.asarray(replicates, dtype=np.float64)
    d = replicates.shape[0]
    spread = ((replicates - replicates.mean(axis=0)) ** 2).sum(axis=0)
    return np.sqrt((d - 1) / d * spread)


def t_interval(estimate, se, dof, level: float = 0.95):
    """``(lo, hi) = estimate -/+ t.ppf((1 + level)/2, dof) * se`` (``scipy.stats.t``)."""
    if not 0 < level < 1:
        raise BvkitError(f"level must lie strictly between 0 and 1, got {level}")
    if np.any(np.asarray(dof) < 1):
        raise BvkitError(f"a t interval needs at least 1 degree of freedom, got {dof}")
    half = stats.t.ppf((1 + level) / 2, dof) * np.asarray(se, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    return estimate - half, estimate + half


def combined_interval(estimate, leave_one_out, bootstrap_replicates=None, level: float = 0.95):
    """Interval of a statistic over both draws: the training sets (its delete-one jackknife,
    ``leave_one_out (D, ...)``) and the test samples (the class-stratified bootstrap,
    ``bootstrap_replicates (B, ...)``, models held fixed; None: test set held fixed).

    ``estimate -/+ t_nu sqrt(se_J^2 + se_B^2)``: the two variances add (the D models and the
    test samples are drawn independently; their interaction is counted in both, which errs
    wide), and ``nu = (se_J^2 + se_B^2)^2 / (se_J^4 / (D - 1))`` (Welch-Satterthwaite, the
    bootstrap's variance taken as known). Where both are 0 (identical methods): zero width.
    NaN where a replicate is NaN."""
    leave_one_out = np.asarray(leave_one_out, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    dof_j = leave_one_out.shape[0] - 1
    if dof_j < 1:
        raise BvkitError(f"a jackknife needs at least 2 models, got {leave_one_out.shape[0]}")
    var_j = jackknife_se(leave_one_out) ** 2
    var_b = (np.zeros_like(var_j) if bootstrap_replicates is None
             else np.asarray(bootstrap_replicates, dtype=np.float64).var(axis=0, ddof=1))
    total = var_j + var_b
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(var_j > 0, total**2 / (var_j**2 / dof_j), np.inf)
    dof = np.where(np.isnan(dof), dof_j, np.maximum(dof, dof_j))
    half = stats.t.ppf((1 + level) / 2, dof) * np.sqrt(total)
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


def population_split_jackknife(labels, *, probs=None, logits=None, preds=None, loss="squared",
                               groups: Groups | None = None) -> dict[str, Jackknife]:
    """Split means (``groups.splits`` order; without ``groups`` one split, ``all``) of the
    population terms with their jackknife over the D training sets: ``column -> Jackknife``
    for :data:`POPULATION_COLUMNS`; a corrected column's replicate k is the correction of the
    D - 1 models without k, a plug-in column's their plug-in value. At D = 2 the corrected
    ``bias`` and ``variance`` have no leave-one-out value: their ``se`` and interval are NaN."""
    labels, scores, kind = _arrays(labels, probs, logits, preds, loss)
    n_models = scores.shape[0]
    check_n_models(n_models, jackknife=True)
    groups = _groups(groups, labels, scores, kind)
    with np.errstate(invalid="ignore"):
        result = jackknife_terms(_kernel_terms(labels, scores, kind, (loss,)), n_models)[loss]
    splits = lambda v: groups.split_means(groups.class_means(v))  # noqa: E731
    out = {}
    for col in POPULATION_COLUMNS:
        name, source = ((col[:-len("_plugin")], "plugin") if col.endswith("_plugin")
                        else (col, "corrected"))
        values = getattr(result, source)[name]
        loo = getattr(result, f"{source}_loo")[name]
        out[col] = Jackknife(splits(values), splits(loo))
    return out


def _groups(groups, labels, scores, kind) -> Groups:
    n_classes = int(scores.max()) + 1 if kind == "preds" else scores.shape[2]
    if groups is None:
        return Groups.build(labels, max(n_classes, int(labels.max()) + 1))
    if not np.array_equal(groups.labels, labels):
        raise BvkitError("groups were built for other labels")
    return groups


def population_split_difference(labels, *, probs_a=None, probs_b=None, logits_a=None,
                                logits_b=None, preds_a=None, preds_b=None, loss="squared",
                                groups: Groups | None = None) -> dict[str, Jackknife]:
    """``method a - method b`` split means of the population terms, paired by training set:
    model k of both methods was trained on subset k, and replicate k leaves it out of both.
    Same test labels; the same D."""
    a = population_split_jackknife(labels, probs=probs_a, logits=logits_a, preds=preds_a,
                                   loss=loss, groups=groups)
    b = population_split_jackknife(labels, probs=probs_b, logits=logits_b, preds=preds_b,
                                   loss=loss, groups=groups)
    d_a, d_b = a["error"].n_models, b["error"].n_models
    if d_a != d_b:
        raise BvkitError(f"a paired difference needs the same training sets: {d_a} models "
                         f"against {d_b}")
    return {col: Jackknife(a[col].estimate - b[col].estimate,
                           a[col].replicates - b[col].replicates) for col in a}
