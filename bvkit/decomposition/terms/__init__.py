"""Per-sample bias-variance terms: pure numpy over one block of predictions.

Definitions are those of ``docs/bias_variance.md``: for each test sample, ``squared`` (Brier),
``zero-one`` (Domingos 2000) and ``cross-entropy`` (Yang et al. 2020) error, bias and variance
over the D models, plus ``accuracy`` (mean over models). Every function takes arrays shaped
``(D, n, C)`` (scores) or ``(D, n)`` (hard predictions) and ``labels`` ``(n,)``, and returns a
dict ``loss -> {column -> (n,) float64}``.

The fused kernel (:func:`block_terms`) reads a block once, works in float32 in place, computes
log-sum-exp once and derives all requested losses from it; reductions over the D models are
finished in float64 on the small ``(D, n)`` / ``(n,)`` arrays.

Modules: ``scores`` (the kernel on score blocks, the one-loss entry points), ``predictions``
(hard predictions), ``replicates`` (bootstrap replicates and jackknife subsets of the models).
"""

from bvkit.decomposition.terms.predictions import (
    accuracy,
    main_prediction,
    pred_terms,
    squared_terms_from_preds,
    weighted_pred_terms,
    zero_one_from_preds,
)
from bvkit.decomposition.terms.replicates import subset_terms, weighted_block_terms
from bvkit.decomposition.terms.scores import (
    LOSSES,
    PROBS_EPSILON,
    PROBS_TOLERANCE,
    SCORE_KINDS,
    VALUE_COLUMNS,
    ZERO_ONE_COLUMNS,
    block_terms,
    columns_of,
    cross_entropy_terms,
    finite_limit,
    score_terms,
    softmax_stats,
    squared_terms,
    to_float32,
    zero_one_terms,
)

__all__ = [
    "LOSSES", "PROBS_EPSILON", "PROBS_TOLERANCE", "SCORE_KINDS", "VALUE_COLUMNS", "ZERO_ONE_COLUMNS",
    "accuracy", "block_terms", "columns_of", "cross_entropy_terms", "finite_limit", "main_prediction",
    "pred_terms", "score_terms", "softmax_stats", "squared_terms", "squared_terms_from_preds",
    "subset_terms", "to_float32", "weighted_block_terms", "weighted_pred_terms", "zero_one_from_preds",
    "zero_one_terms",
]
