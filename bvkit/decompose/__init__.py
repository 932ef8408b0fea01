"""Bias-variance decomposition of prediction arrays: pure numpy, no torch.

``bvkit.decompose(labels, logits=None, probs=None, preds=None, *, train_counts=None,
class_names=None, loss="squared", many=100, few=20, bootstrap=0, bootstrap_models=False,
level=0.95, seed=0, method="model", chunk_size=None, n_jobs=None)`` -> :class:`Decomposition`
with tidy ``per_sample``, ``per_class`` and ``per_split`` frames (see
:func:`bvkit.decompose.core.decompose`). Definitions: ``BIAS_VARIANCE.md``.

This module is callable, and its ``decompose`` attribute is the module itself, so
``bvkit.decompose(...)``, ``from bvkit.decompose import decompose; decompose(...)`` and
``bvkit.decompose.squared_terms(...)`` all work, however ``bvkit`` binds the name.
"""

import inspect
import sys
import types

from bvkit.decompose.compare import Comparison, compare
from bvkit.decompose.core import Decomposition, decompose_file
from bvkit.decompose.core import decompose as _decompose
from bvkit.decompose.engine import sample_terms
from bvkit.decompose.frames import SPLITS, shot_splits
from bvkit.decompose.io import (
    PredictionSet,
    find_prediction_sets,
    load_predictions,
    method_name,
    save_predictions,
)
from bvkit.decompose.terms import (
    LOSSES,
    PROBS_EPSILON,
    PROBS_TOLERANCE,
    cross_entropy_terms,
    main_prediction,
    squared_terms,
    zero_one_terms,
)

__all__ = [
    "LOSSES", "PROBS_EPSILON", "PROBS_TOLERANCE", "SPLITS", "Comparison", "Decomposition",
    "PredictionSet", "compare", "cross_entropy_terms", "decompose", "decompose_file",
    "find_prediction_sets", "load_predictions", "main_prediction", "method_name",
    "sample_terms", "save_predictions", "shot_splits", "squared_terms", "zero_one_terms",
]


class _CallableModule(types.ModuleType):
    """Lets ``bvkit.decompose(...)`` work although ``bvkit.decompose`` is also a package."""

    def __call__(self, *args, **kwargs):
        return _decompose(*args, **kwargs)


decompose = sys.modules[__name__]
decompose.__class__ = _CallableModule
decompose.__signature__ = inspect.signature(_decompose)
