"""Decompose several prediction sets at once: the one place that decomposes each set and
stacks the results (``bvkit decompose``, ``Study.decompose`` and the report's study frames)."""

from __future__ import annotations

from collections.abc import Iterable

from bvkit.decomposition.core import Decomposition, decompose_file


def decompose_sets(sets: Iterable, *, name: str | None = None, **options) -> Decomposition:
    """:func:`~bvkit.decomposition.core.decompose_file` on every prediction set of ``sets``
    (paths of ``.npz`` files or ``.npy`` directories, or
    :class:`~bvkit.decomposition.io.PredictionSet` objects already read), stacked into one
    :class:`Decomposition` with a ``method`` column (``Decomposition.concat``: a method name
    used twice is an error, as is no set at all).

    ``name`` renames the method of a single set (default: each set's own name); ``options``
    are :func:`bvkit.decompose`'s (``loss``, ``estimator``, ``expert_loss``, ``bootstrap``,
    ``bootstrap_models``, ``level``, ``seed``, ``many``, ``few``, ``chunk_size``,
    ``n_jobs``, ...), the same for every set.
    """
    return Decomposition.concat(decompose_file(pset, name=name, **options) for pset in sets)
