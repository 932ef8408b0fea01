"""``decompose``: prediction arrays -> per-sample, per-class, per-split and per-model frames
(a :class:`~bvkit.decomposition.result.Decomposition`); ``decompose_experts``: the same for a
multi-expert model's bias-variance-diversity decomposition."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bvkit.data.profiles import FEW_SHOT, MANY_SHOT, check_thresholds
from bvkit.decomposition import bootstrap as bs
from bvkit.decomposition import experts as E
from bvkit.decomposition import inputs, passes
from bvkit.decomposition import population as P
from bvkit.decomposition.grouping import (
    Groups,
    class_frame,
    model_frame,
    ordered_columns,
    sample_frame,
    split_frame,
)
from bvkit.decomposition.io import PredictionSet, load_predictions
from bvkit.decomposition.result import CLASS_KEY, SPLIT_KEY, Decomposition
from bvkit.decomposition.terms import columns_of
from bvkit.errors import BvkitError
from bvkit.predictions import check_expert_weights

#: Frame order of the value columns: the decomposition's, then the population estimator's
#: plug-in twins.
VALUE_ORDER = columns_of("zero-one") + tuple(P.plugin_column(c) for c in P.CORRECTED["zero-one"])
EXPERT_ORDER = E.EXPERT_COLUMNS + tuple(P.plugin_column(c)
                                        for c in E.EXPERT_CORRECTED[E.EXPERT_LOSSES[0]])


def decompose(
    labels, logits=None, probs=None, preds=None, *,
    train_counts=None, class_names=None, loss="squared", many: int = MANY_SHOT, few: int = FEW_SHOT,
    bootstrap: int = 0, bootstrap_models: bool = False, level: float = 0.95, seed: int = 0,
    method: str = "model", chunk_size: int | None = None, n_jobs: int | None = None,
    expert_logits=None, routed: bool | None = None, expert_loss=None, expert_weights=None,
    estimator: str = "auto",
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

    ``estimator``: ``"population"`` reports the terms of the population of models the D
    training sets were drawn from, corrected for finite D by the delete-one-subset jackknife
    (:mod:`bvkit.decomposition.population`; the plug-in values stay beside them as
    ``bias_plugin``, ``variance_plugin``, ...), and its intervals cover both the training sets
    (the jackknife, paired by subset across methods) and the test samples (the bootstrap), a t
    interval; ``"plugin"``: the terms of these D models, percentile intervals over test samples;
    ``"auto"`` (default): population when D >= 3 and not ``bootstrap_models``, else plug-in.
    The population estimator costs 1 + D + D(D-1)/2 kernel passes (16 at D = 5).

    With ``bootstrap_models`` a replicate holds repeated models, which shrinks the plug-in
    variance (by about (D-1)/D on average), so with few models its interval sits below the
    point estimate; it shows the spread due to the choice of models, not a centred interval.
    Its cost is B recomputations of the per-sample terms (cross-entropy: B x D x N x C
    multiply-adds), done in one chunked pass.

    ``expert_logits (D, M, N, C)`` beside ``logits``: a multi-expert model's experts. The
    result's ``experts`` then holds their bias-variance-diversity decomposition
    (:func:`decompose_experts`, with the same splits and bootstrap) under ``expert_loss``
    (default: the losses of ``loss`` that have one, squared and cross-entropy; none for
    zero-one alone). ``routed``: whether ``logits`` may be a router's mean of each sample's
    first k experts (None: either; False: always the mean of all M). ``expert_weights (D, M)``:
    the weights each model combines its experts with (SADE's learned ones); when they are not
    all 1/M, ``logits`` must be the weighted sum of the experts and no expert decomposition is
    computed (it needs equal weights: ``experts`` stays None and ``settings[method]
    ["weighted_experts"]`` is True); equal weights are the plain mean, as without them.
    """
    losses, kind, scores, labels = _resolve_scores(labels, logits, probs, preds, loss)
    n_classes = inputs.check_inputs(labels, scores, kind, train_counts, class_names)
    _check_options(many, few, bootstrap, level, seed, chunk_size)
    estimator = P.resolve_estimator(estimator, scores.shape[0], bootstrap_models=bootstrap_models)
    groups = Groups.build(labels, n_classes, train_counts, class_names, many, few)
    correct = np.empty(scores.shape[:2], dtype=bool)
    values, leave_one_out = _sample_terms(labels, scores, kind, n_classes, losses, estimator,
                                          chunk_size, n_jobs, correct)
    intervals = (_ScoreIntervals.draw(labels, scores, kind, n_classes, losses, values, leave_one_out,
                                      groups, bootstrap, bootstrap_models, level, seed, chunk_size,
                                      n_jobs) if bootstrap else None)
    frames = _loss_frames(method, losses, values, leave_one_out, groups, intervals)
    settings = {method: dict(
        loss=list(losses), many=many, few=few, bootstrap=bootstrap,
        bootstrap_models=bootstrap_models, level=level, seed=seed, kind=kind,
        estimator=estimator,
        n_models=int(scores.shape[0]), n_samples=int(labels.shape[0]), n_classes=n_classes)}
    experts = _experts_beside(
        labels, scores, kind, losses, settings[method], expert_logits, expert_weights, expert_loss,
        routed, train_counts=train_counts, class_names=class_names, many=many, few=few,
        bootstrap=bootstrap, bootstrap_models=bootstrap_models, level=level, seed=seed,
        method=method, chunk_size=chunk_size, estimator=estimator)
    return Decomposition(*frames, settings, model_frame(method, groups.class_means(correct), groups),
                         experts, {(method, name): cols for name, cols in leave_one_out.items()})


def _resolve_scores(labels, logits, probs, preds, loss):
    """``(losses, kind, scores, labels)``: the losses asked for that the given kind of scores
    supports (``"all"`` of hard predictions: squared and zero-one), the scores and labels as
    arrays."""
    losses = inputs.resolve_losses(loss)
    kind, scores = inputs.pick_scores(logits, probs, preds)
    if loss == "all" and kind == "preds":  # "all" that hard predictions support
        losses = tuple(name for name in losses if name != "cross-entropy")
    if kind == "preds" and "cross-entropy" in losses:
        raise BvkitError("cross-entropy needs scores (logits or probs), not hard preds")
    if not isinstance(scores, np.ndarray):
        scores = np.asarray(scores)
    return losses, kind, scores, np.asarray(labels)


def _sample_terms(labels, scores, kind, n_classes, losses, estimator, chunk_size, n_jobs, correct):
    """``(values, leave_one_out)``: the per-sample terms (population-corrected under the
    population estimator, whose delete-one terms come beside them; else ``{}``); ``correct``
    receives whether each model predicts each sample's label."""
    if estimator == "population":
        return passes.population_sample_terms(labels, scores, kind, n_classes, losses, chunk_size,
                                              n_jobs, correct=correct)
    return passes.sample_terms(labels, scores, kind, n_classes, losses, chunk_size, n_jobs,
                               correct=correct), {}


@dataclass
class _ScoreIntervals:
    """The bootstrap intervals of :func:`decompose`'s class and split means, made one column at
    a time when first asked for; accuracy is the same under every loss: bootstrapped once."""

    values: dict
    groups: Groups
    level: float
    resamples: bs.Resamples
    replicate_sums: dict | None
    leave_one_out: dict
    made: dict = field(default_factory=dict)

    @classmethod
    def draw(cls, labels, scores, kind, n_classes, losses, values, leave_one_out, groups, bootstrap,
             bootstrap_models, level, seed, chunk_size, n_jobs) -> "_ScoreIntervals":
        """The test-sample resamples, and with ``bootstrap_models`` the class sums of the terms
        recomputed for each replicate of the models (one chunked pass)."""
        resamples = bs.Resamples.draw(labels, bootstrap, seed)
        replicate_sums = None
        if bootstrap_models:
            weights = bs.model_weights(scores.shape[0], bootstrap, (seed, 1))
            replicate_sums = passes.replicate_class_sums(labels, scores, kind, n_classes, losses,
                                                         weights, resamples.by_sample(),
                                                         chunk_size, n_jobs)
        return cls(values, groups, level, resamples, replicate_sums, leave_one_out)

    def bounds(self, name: str, col: str, estimate: np.ndarray) -> tuple[dict, dict]:
        """``(class bounds, split bounds)`` of column ``col`` under loss ``name``."""
        key = col if col == "accuracy" else (name, col)
        if key not in self.made:
            reps = (bs.sums_to_means(self.replicate_sums[name][col], self.groups) if self.replicate_sums
                    else bs.class_replicates(self.values[name][col], self.groups, self.resamples))
            jack = (self.groups.class_means(self.leave_one_out[name][col]) if self.leave_one_out
                    else None)
            self.made[key] = ({}, {})
            bs.add_intervals(*self.made[key], col, reps, self.groups, self.level,
                             estimate=estimate, leave_one_out=jack)
        return self.made[key]


def _loss_frames(method, losses, values, leave_one_out, groups,
                 intervals: _ScoreIntervals | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(per_sample, per_class, per_split)`` of every loss, with the intervals when given."""
    samples, classes, splits = [], [], []
    for name in losses:
        cols = values[name]
        value_cols = P.population_columns(name) if leave_one_out else columns_of(name)
        class_cols = {c: groups.class_means(cols[c]) for c in value_cols}
        split_cols = {c: groups.split_means(v) for c, v in class_cols.items()}
        for c in columns_of(name) if intervals is not None else ():
            class_bounds, split_bounds = intervals.bounds(name, c, class_cols[c])
            class_cols.update(class_bounds)
            split_cols.update(split_bounds)
        samples.append(sample_frame(method, name, cols, groups))
        classes.append(ordered_columns(class_frame(method, name, class_cols, groups), CLASS_KEY,
                                       VALUE_ORDER))
        splits.append(ordered_columns(split_frame(method, name, split_cols, groups), SPLIT_KEY,
                                      VALUE_ORDER))
    return tuple(pd.concat(frames, ignore_index=True) for frames in (samples, classes, splits))


def _experts_beside(labels, scores, kind, losses, settings: dict, expert_logits, expert_weights,
                    expert_loss, routed, **options) -> Decomposition | None:
    """:func:`decompose`'s expert decomposition (``options``: :func:`decompose_experts`'
    keywords), None when there is none; ``settings`` (the method's) records
    ``weighted_experts`` and ``expert_loss``."""
    if expert_weights is not None and expert_logits is None:
        raise BvkitError("expert_weights need expert_logits beside them (the experts they weight)")
    if expert_logits is None:
        return None
    if kind != "logits":
        raise BvkitError(f"expert_logits need logits beside them (the model's own output), "
                         f"not {kind}")
    if _learned_weights(expert_logits, expert_weights):
        E.check_expert_inputs(_as_array(expert_logits), labels, scores, routed, options["chunk_size"],
                              weights=expert_weights)
        settings["weighted_experts"] = True
        return None  # the expert decomposition assumes equal weights: skipped
    names = (tuple(name for name in losses if name in E.EXPERT_LOSSES)
             if expert_loss is None else resolve_expert_losses(expert_loss))
    settings["expert_loss"] = list(names)
    if not names:  # zero-one alone: the inputs are still checked
        E.check_expert_inputs(_as_array(expert_logits), labels, scores, routed, options["chunk_size"])
        return None
    return decompose_experts(labels, expert_logits, scores, routed=routed, loss=names, **options)


def _learned_weights(expert_logits, expert_weights) -> bool:
    """Whether ``expert_weights`` (checked against ``expert_logits``' shape) combine the
    experts otherwise than by their plain mean."""
    if expert_weights is None:
        return False
    weights = check_expert_weights(expert_weights, np.shape(expert_logits))
    return not E.equal_weights(weights)


def _check_options(many, few, bootstrap, level, seed, chunk_size) -> None:
    check_thresholds(many, few)
    bs.check_bootstrap(bootstrap, level)
    if int(seed) != seed or seed < 0:
        raise BvkitError(f"seed must be a non-negative integer, got {seed}")
    if chunk_size is not None and chunk_size < 1:
        raise BvkitError(f"chunk_size must be at least 1, got {chunk_size}")


def resolve_expert_losses(loss) -> tuple[str, ...]:
    """``"all"``, one loss or a sequence -> the expert losses in canonical order; zero-one has
    no bias-variance-diversity decomposition."""
    names = (E.EXPERT_LOSSES if loss == "all" else (loss,)) if isinstance(loss, str) else tuple(loss)
    unknown = [name for name in names if name not in E.EXPERT_LOSSES]
    if unknown or not names:
        raise BvkitError(f"no bias-variance-diversity decomposition for loss "
                         f"{', '.join(map(str, unknown)) or '(none)'}: choose from "
                         f"{', '.join(E.EXPERT_LOSSES)} or all")
    return tuple(name for name in E.EXPERT_LOSSES if name in names)


def _as_array(values) -> np.ndarray:
    return values if isinstance(values, np.ndarray) else np.asarray(values)


def decompose_experts(
    labels, expert_logits, logits=None, *,
    routed: bool | None = None, train_counts=None, class_names=None, loss="all",
    many: int = MANY_SHOT, few: int = FEW_SHOT, bootstrap: int = 0, bootstrap_models: bool = False,
    level: float = 0.95, seed: int = 0, method: str = "model", chunk_size: int | None = None,
    estimator: str = "auto",
) -> Decomposition:
    """Bias-variance-diversity decomposition of a multi-expert model (Wood et al. 2023).

    ``expert_logits (D, M, N, C)``: the M experts of D models trained on D training sets;
    ``labels (N,)``. Per test sample, then per class and per split (the groups, ``many`` /
    ``few`` thresholds and bootstrap of :func:`decompose`): ``ensemble_loss = average_bias +
    average_variance - diversity`` under ``loss``: ``"cross-entropy"`` (the experts combined
    by the normalised geometric mean of their softmaxes, RIDE's softmax of the mean logits),
    ``"squared"`` (the arithmetic mean of their softmaxes), a list, or ``"all"`` (both).
    ``logits (D, N, C)``, the model's own output, is checked to be the experts' mean (see
    :func:`bvkit.decomposition.experts.check_expert_inputs` for ``routed``); the experts'
    full outputs are decomposed whatever a router uses. Returns a :class:`Decomposition` whose
    frames hold the four columns (no ``per_model``). ``estimator`` as :func:`decompose`: the
    population estimator corrects ``average_bias`` and ``average_variance`` for finite D (the
    plug-in ones beside them as ``*_plugin``; ``ensemble_loss`` and ``diversity`` are means
    over models) and its intervals cover the training sets too. Definitions:
    ``docs/bias_variance.md``.
    """
    losses = resolve_expert_losses(loss)
    _check_options(many, few, bootstrap, level, seed, chunk_size)
    labels, expert_logits, routed_found = _check_expert_arrays(labels, expert_logits, logits, routed,
                                                               train_counts, class_names, chunk_size)
    n_models, _, n_samples, n_classes = expert_logits.shape
    estimator = P.resolve_estimator(estimator, n_models, bootstrap_models=bootstrap_models)
    groups = Groups.build(labels, n_classes, train_counts, class_names, many, few)
    size = chunk_size or E.default_chunk_size(expert_logits.shape)
    if estimator == "population":
        values, leave_one_out = _population_expert_terms(labels, expert_logits, losses, size)
    else:
        values, leave_one_out = _plugin_expert_terms(labels, expert_logits, losses, size), {}
    replicates = (_expert_replicates(labels, expert_logits, losses, values, groups, bootstrap,
                                     bootstrap_models, seed, chunk_size) if bootstrap else {})
    frames = _expert_frames(method, losses, values, leave_one_out, groups, replicates, level)
    settings = {method: dict(
        loss=list(losses), many=many, few=few, bootstrap=bootstrap,
        bootstrap_models=bootstrap_models, level=level, seed=seed, n_models=n_models,
        n_experts=int(expert_logits.shape[1]), n_samples=n_samples, n_classes=n_classes,
        routed=routed_found, estimator=estimator)}
    return Decomposition(*frames, settings,
                         leave_one_out={(method, name): cols for name, cols in leave_one_out.items()})


def _check_expert_arrays(labels, expert_logits, logits, routed, train_counts, class_names, chunk_size):
    """``(labels, expert_logits, routed)``: the arrays checked against each other (``logits``,
    when given, the experts' mean; see :func:`decompose_experts`) and whether a router's
    prefix means were found."""
    expert_logits = _as_array(expert_logits)
    labels = np.asarray(labels)
    if logits is not None:
        logits = _as_array(logits)
    if expert_logits.ndim != 4:
        raise BvkitError(f"expert_logits must have shape (D, M, N, C), got "
                         f"{tuple(expert_logits.shape)}")
    if logits is not None:
        inputs.check_inputs(labels, logits, "logits", train_counts, class_names)
    routed_found = E.check_expert_inputs(expert_logits, labels, logits, routed, chunk_size)
    # labels, counts and names against one expert's (D, N, C) logits (a view: nothing is read)
    inputs.check_inputs(labels, expert_logits[:, 0], "logits", train_counts, class_names)
    return labels, expert_logits, routed_found


def _plugin_expert_terms(labels, expert_logits, losses, chunk_size) -> dict:
    """The experts' per-sample terms of these D models, ``chunk_size`` test samples at a time."""
    n_samples = expert_logits.shape[2]
    values = {name: {col: np.empty(n_samples) for col in E.EXPERT_COLUMNS} for name in losses}
    for start, stop in E.chunks(n_samples, chunk_size):
        chunk = E.expert_terms(labels[start:stop], expert_logits[:, :, start:stop], losses)
        for name, cols in chunk.items():
            for col, terms in cols.items():
                values[name][col][start:stop] = terms
    return values


def _expert_replicates(labels, expert_logits, losses, values, groups, bootstrap, bootstrap_models,
                       seed, chunk_size) -> dict:
    """``loss -> {column: (B, classes) class-mean replicates}`` over :func:`decompose`'s test-sample
    resamples (and the models' too with ``bootstrap_models``)."""
    resamples = bs.Resamples.draw(labels, bootstrap, seed)  # decompose's resamples
    if not bootstrap_models:
        return {name: {col: bs.class_replicates(values[name][col], groups, resamples)
                       for col in E.EXPERT_COLUMNS} for name in losses}
    weights = bs.model_weights(expert_logits.shape[0], bootstrap, (seed, 1))
    sums = E.replicate_class_sums(labels, expert_logits, losses, weights, resamples.by_sample(),
                                  expert_logits.shape[3], chunk_size)
    return {name: {col: bs.sums_to_means(s, groups) for col, s in cols.items()}
            for name, cols in sums.items()}


def _expert_frames(method, losses, values, leave_one_out, groups, replicates,
                   level) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(per_sample, per_class, per_split)`` of the experts' terms under every loss, with the
    intervals of ``replicates``."""
    samples, classes, splits = [], [], []
    for name in losses:
        cols = values[name]
        class_cols = {c: groups.class_means(v) for c, v in cols.items()}
        split_cols = {c: groups.split_means(v) for c, v in class_cols.items()}
        for c, reps in replicates.get(name, {}).items():
            jack = groups.class_means(leave_one_out[name][c]) if leave_one_out else None
            bs.add_intervals(class_cols, split_cols, c, reps, groups, level,
                             estimate=class_cols[c], leave_one_out=jack)
        samples.append(pd.DataFrame({
            "method": method, "loss": name, "sample": np.arange(len(groups.labels)),
            "class": groups.labels, "split": groups.class_split[groups.labels], **cols}))
        classes.append(ordered_columns(class_frame(method, name, class_cols, groups), CLASS_KEY,
                                       EXPERT_ORDER))
        splits.append(ordered_columns(split_frame(method, name, split_cols, groups), SPLIT_KEY,
                                      EXPERT_ORDER))
    return tuple(pd.concat(frames, ignore_index=True) for frames in (samples, classes, splits))


def _population_expert_terms(labels, expert_logits, losses, chunk_size):
    """The experts' per-sample terms corrected for finite D (``population.jackknife_terms``):
    every model subset the jackknife needs is one row of model weights of
    :func:`bvkit.decomposition.experts.expert_terms` (weight D/|subset| on its models), all in
    one call per chunk. Returns ``(values, leave_one_out)`` as ``passes.population_sample_terms``."""
    n_models, n_samples = expert_logits.shape[0], expert_logits.shape[2]
    every, without_one, without_two = P.leave_out_sets(n_models)
    subsets = [every, *without_one, *without_two.values()]
    row_of = {tuple(keep.tolist()): i for i, keep in enumerate(subsets)}
    weights = np.zeros((len(subsets), n_models))
    for i, keep in enumerate(subsets):
        weights[i, keep] = n_models / keep.size
    twins = {name: tuple(P.plugin_column(c) for c in E.EXPERT_CORRECTED[name]) for name in losses}
    values = {name: {col: np.empty(n_samples) for col in E.EXPERT_COLUMNS + twins[name]}
              for name in losses}
    loo = {name: {col: np.empty((n_models, n_samples)) for col in E.EXPERT_COLUMNS}
           for name in losses}
    for start, stop in E.chunks(n_samples, max(1, chunk_size // len(subsets))):
        terms = E.expert_terms(labels[start:stop], expert_logits[:, :, start:stop], losses,
                               weights=weights)
        result = P.jackknife_terms(
            lambda keep: {name: {col: v[row_of[tuple(keep.tolist())]] for col, v in cols.items()}
                          for name, cols in terms.items()},
            n_models, corrected=E.EXPERT_CORRECTED)
        for name, jack in result.items():
            for col in E.EXPERT_COLUMNS:
                values[name][col][start:stop] = jack.corrected[col]
                loo[name][col][:, start:stop] = jack.corrected_loo[col]
            for col in E.EXPERT_CORRECTED[name]:
                values[name][P.plugin_column(col)][start:stop] = jack.plugin[col]
    return values, loo


def decompose_file(path, name=None, **kwargs) -> Decomposition:
    """:func:`decompose` on a prediction file (``.npz`` or a directory of ``.npy``), or on a
    :class:`~bvkit.decomposition.io.PredictionSet` already read."""
    pset = path if isinstance(path, PredictionSet) else load_predictions(path, name=name)
    try:
        return decompose(method=name or pset.name, **pset.arrays(), **kwargs)
    except BvkitError as err:
        raise BvkitError(f"{pset.path or pset.name}: {err}") from None
