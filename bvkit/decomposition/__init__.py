"""Bias-variance decomposition of prediction arrays: pure numpy, no torch.

``decompose(labels, logits=None, probs=None, preds=None, *, train_counts=None,
class_names=None, loss="squared", many=100, few=20, bootstrap=0, bootstrap_models=False,
level=0.95, seed=0, method="model", chunk_size=None, n_jobs=None, estimator="auto")`` ->
:class:`Decomposition`
with tidy ``per_sample``, ``per_class``, ``per_split`` and ``per_model`` frames
(``bvkit.decompose`` is this function). Given a multi-expert model's ``expert_logits (D, M,
N, C)``, its ``experts`` frames hold the bias-variance-diversity decomposition of Wood et al.
(2023) (``decompose_experts``, ``expert_terms``). With D >= 3 models the terms are those of
the population of training sets, corrected for finite D by the delete-one-subset jackknife
(``population_terms``, ``combined_interval``). Definitions: ``docs/bias_variance.md``; file
formats: ``docs/formats.md``.
"""

from bvkit.decomposition.compare import (
    Comparison,
    compare,
    difference_leave_one_out,
    difference_replicates,
)
from bvkit.decomposition.core import Decomposition, decompose, decompose_experts, decompose_file
from bvkit.decomposition.experts import EXPERT_COLUMNS, EXPERT_LOSSES, expert_terms
from bvkit.decomposition.io import (
    PredictionSet,
    find_prediction_sets,
    load_predictions,
    method_name,
    save_predictions,
)
from bvkit.decomposition.passes import sample_terms
from bvkit.decomposition.population import (
    ESTIMATORS,
    Jackknife,
    combined_interval,
    jackknife,
    paired_jackknife,
    population_split_difference,
    population_split_jackknife,
    population_terms,
)
from bvkit.decomposition.sets import decompose_sets
from bvkit.decomposition.terms import (
    LOSSES,
    PROBS_EPSILON,
    PROBS_TOLERANCE,
    cross_entropy_terms,
    main_prediction,
    squared_terms,
    zero_one_terms,
)

__all__ = [
    "ESTIMATORS", "EXPERT_COLUMNS", "EXPERT_LOSSES", "Jackknife", "LOSSES", "PROBS_EPSILON", "PROBS_TOLERANCE", "Comparison",
    "Decomposition", "PredictionSet", "combined_interval", "compare", "cross_entropy_terms", "decompose",
    "decompose_experts", "decompose_file", "decompose_sets", "difference_leave_one_out", "difference_replicates",
    "expert_terms", "find_prediction_sets", "jackknife", "load_predictions", "main_prediction",
    "method_name", "paired_jackknife", "population_split_difference",
    "population_split_jackknife", "population_terms", "sample_terms", "save_predictions",
    "squared_terms", "zero_one_terms",
]
