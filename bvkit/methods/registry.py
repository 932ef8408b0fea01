"""The method registry: a method name -> its :class:`~bvkit.methods.recipe.Recipe`. The RIDE
paper's methods (``bvkit.methods.ride_paper``) are registered when ``bvkit.methods`` is
imported, the methods since RIDE (``bvkit.methods.since_ride``) on the registry's first
look-up."""

from __future__ import annotations

from typing import Any

from bvkit.methods.datasets import for_dataset
from bvkit.methods.overrides import apply_overrides
from bvkit.methods.recipe import Recipe
from bvkit.registry import Registry

_METHODS: Registry[Recipe] = Registry("method", built_in=("bvkit.methods.since_ride",))  # loaded on first look-up


def register_method(recipe: Recipe, overwrite: bool = False) -> Recipe:
    """Add ``recipe`` under ``recipe.name`` (user methods included)."""
    return _METHODS.register(recipe.name, recipe, overwrite=overwrite)


def list_methods(pattern: str = "*") -> list[str]:
    return _METHODS.names(pattern)


def get_method(name: str) -> Recipe:
    return _METHODS.get(name)


def create_method(name: str | Recipe, dataset: str | None = None, **overrides: Any) -> Recipe:
    """The recipe of ``name`` (adapted to ``dataset`` when it is an ImageNet-size benchmark,
    see ``for_dataset``) with ``overrides`` applied (``parse_overrides``' grammar). A
    :class:`Recipe` given instead of a name is taken as already resolved: only the overrides
    are applied (``bvkit.train.train`` and packing take either)."""
    if isinstance(name, Recipe):
        return apply_overrides(name, overrides)
    recipe = get_method(name)
    if dataset is not None:
        recipe = for_dataset(recipe, dataset)
    return apply_overrides(recipe, overrides)
