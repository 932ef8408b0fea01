"""A study's tidy frames for the figures and tables: its decomposition under one loss, each
method's comparison to the reference, its multi-expert methods' bias-variance-diversity
decomposition (cross-entropy), the runs' metrics, expert usage and training curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bvkit.data.profiles import FEW_SHOT, MANY_SHOT
from bvkit.decomposition import (
    LOSSES,
    Decomposition,
    compare,
    decompose_sets,
    find_prediction_sets,
    load_predictions,
)
from bvkit.errors import BvkitError
from bvkit.report.differences import split_differences_from_comparison
from bvkit.study.reader import Study, load_study, read_histories, read_table

DIFFERENCE_METRICS = ("accuracy", "error", "bias", "variance")
#: The experts' decomposition of the report: cross-entropy, whose combiner (the normalised
#: geometric mean of the experts' softmaxes) is RIDE's own, whatever the study's ``loss``.
EXPERT_LOSS = "cross-entropy"


@dataclass
class StudyFrames:
    """A study's decomposition (one loss), its comparison to the reference, metrics, usage."""

    directory: Path
    loss: str
    reference: str
    per_sample: pd.DataFrame
    per_class: pd.DataFrame
    per_split: pd.DataFrame
    split_differences: pd.DataFrame  # method, split, metric, diff, diff_lo, diff_hi
    split_accuracy: pd.DataFrame  # the decomposition's per_model: method, model, split, accuracy
    metrics: pd.DataFrame | None  # metrics.csv, when the study wrote one
    expert_usage: pd.DataFrame | None  # expert_usage.csv, routed RIDE runs only
    many: int = MANY_SHOT  # the shot split's thresholds: many-shot > many, few-shot < few images
    few: int = FEW_SHOT
    histories: pd.DataFrame | None = None  # the runs' history.csv (read_histories), where runs/ has them
    # per-split terms of each snapshot epoch (Study.decompose_along_training), where runs have snapshots
    along_training: pd.DataFrame | None = None
    recipes: dict = field(default_factory=dict)  # method -> its recipe (the spec's ``method``)
    # the bias-variance-diversity decomposition (EXPERT_LOSS) of the methods with expert logits
    experts: Decomposition | None = None
    # method -> what its spec entry sets: {"method": recipe, **recipe overrides, "seeds": [...]}
    method_options: dict = field(default_factory=dict)
    # (method, loss) -> {column: (D, N)}: the population estimator's terms without training
    # set k (Decomposition.leave_one_out); empty for the plug-in estimator
    leave_one_out: dict = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.per_split["method"]))


def study_frames(source, *, loss: str = "squared", reference: str = "ce", bootstrap: int = 1000,
                 seed: int = 0, many: int = MANY_SHOT, few: int = FEW_SHOT,
                 estimator: str = "auto") -> StudyFrames:
    """Decompose every prediction set of a study under ``loss`` (with ``bootstrap`` intervals,
    shot splits at ``many`` / ``few``) and compare each method to ``reference`` with paired
    bootstrap intervals; methods with expert logits also get their experts' bias-variance-
    diversity decomposition under cross-entropy (``experts``), with the same bootstrap.
    ``estimator``: that of :func:`bvkit.decompose` (default ``"auto"``: the population terms
    for D >= 3, their intervals and the comparisons paired over training sets too).

    ``source``: a :class:`~bvkit.study.reader.Study`, a study directory, or a plain folder of
    prediction sets (``predictions/<method>.npz`` and, optionally, metrics.csv and
    expert_usage.csv beside them).
    """
    if loss not in LOSSES:
        raise BvkitError(f"unknown loss {loss!r} (choose {', '.join(LOSSES)})")
    if not isinstance(source, Study) and Path(source).is_dir() and (Path(source) / "spec.toml").is_file():
        source = load_study(source)
    directory, sets, metrics, usage, histories, recipes, options = _read(source)
    decomposition = decompose_sets(sets, loss=loss, bootstrap=bootstrap, seed=seed, many=many, few=few,
                                   expert_loss=EXPERT_LOSS, estimator=estimator)
    if reference not in decomposition.methods:
        raise BvkitError(f"reference method {reference!r} not in {directory} "
                         f"(methods: {', '.join(decomposition.methods)}); use --reference")
    if len(decomposition.methods) < 2:
        raise BvkitError(f"{directory}: only {reference!r} has predictions; nothing to compare")
    comparison = compare(decomposition, reference, bootstrap=bootstrap, seed=seed)
    along = (source.decompose_along_training(loss=loss, many=many, few=few)
             if isinstance(source, Study) and source.snapshots else None)
    metric_names = [m for m in DIFFERENCE_METRICS if m in comparison.per_split.columns]
    return StudyFrames(
        directory=directory, loss=loss, reference=reference,
        per_sample=decomposition.per_sample, per_class=decomposition.per_class,
        per_split=decomposition.per_split,
        split_differences=split_differences_from_comparison(comparison.per_split, metric_names),
        split_accuracy=decomposition.per_model,
        metrics=None if metrics.empty else metrics,
        expert_usage=None if usage.empty else usage,
        histories=None if histories.empty else histories, many=many, few=few, along_training=along,
        recipes={m: recipes.get(m, m) for m in decomposition.methods},
        experts=decomposition.experts,
        method_options={m: options[m] for m in decomposition.methods if m in options},
        leave_one_out=decomposition.leave_one_out,
    )


def _read(source):
    """(directory, prediction sets, metrics, expert usage, training curves, method -> recipe,
    method -> its spec settings) of a study or a plain folder (where a method's name is its
    recipe and nothing else is known of it)."""
    if not isinstance(source, Study):
        directory = Path(source)
        if not directory.exists():
            raise BvkitError(f"{directory}: no such study directory")
        if not directory.is_dir():
            raise BvkitError(f"{directory}: not a directory (expected a study directory)")
        if not (directory / "spec.toml").is_file():
            sets = [load_predictions(path) for path in find_prediction_sets(directory)]
            metrics = read_table(directory / "metrics.csv")
            histories = read_histories(directory, metrics) if "run_id" in metrics else metrics.iloc[:0]
            return (directory, sets, metrics, read_table(directory / "expert_usage.csv"),
                    histories, {}, {})
        source = load_study(directory)
    if not source.prediction_sets:
        raise BvkitError(f"{source.path}: no complete method has predictions yet")
    recipes = {m.name: m.method for m in source.spec.methods}
    options = {m.name: {"method": m.method, **m.overrides, "seeds": list(m.seeds)}
               for m in source.spec.methods}
    return (source.path, list(source.prediction_sets.values()), source.metrics,
            source.expert_usage, source.histories, recipes, options)
