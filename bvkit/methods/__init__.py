"""Method registry: a method name -> a :class:`Recipe` (model, loss, optimiser, schedule, stages).

Defaults are the published CIFAR recipes, with milestones stated for the 200-epoch reference
and scaled when ``epochs`` is shorter (``bvkit.train.schedule``); on the ImageNet-size
benchmarks every method first takes that benchmark's published setting (``DATASET_SETTINGS``):
``create_method("ride", dataset="imagenet-lt")`` is RIDE as published on ImageNet-LT.
``docs/recipes.md`` traces every recipe to its source.

* ``recipe``: :class:`Recipe`, :class:`Stage`, ``STAGE_KINDS``, ``PRECISIONS``, ``SCHEDULE_SCALINGS``;
* ``checks``: ``check_recipe``, the declared constraints, ``RECIPE_CHECKS``;
* ``overrides``: the one override grammar (``parse_overrides``, ``apply_overrides``,
  ``named_overrides``);
* ``datasets``: ``DATASET_SETTINGS``, ``for_dataset``;
* ``registry``: ``register_method``, ``list_methods``, ``get_method``, ``create_method``;
* the built-in recipes: ``ride_paper`` (registered on import), ``since_ride`` (on the
  registry's first look-up).

    >>> recipe = create_method("ride", epochs=10, **{"model_kwargs.num_experts": 2})
    >>> list_methods("ride*")
    ['ride', 'ride-distill', 'ride-ea']
"""

from bvkit.methods import ride_paper  # noqa: F401  (registers the RIDE paper's methods)
from bvkit.methods.checks import (
    LOSS_RULES,
    RECIPE_CHECKS,
    STAGE_OPTION_RULES,
    check_declared,
    check_recipe,
)
from bvkit.methods.datasets import DATASET_SETTINGS, DatasetSetting, for_dataset
from bvkit.methods.overrides import NAMED_SETTINGS, apply_overrides, named_overrides, parse_overrides
from bvkit.methods.recipe import DEVICE_DATA_STAGES, PRECISIONS, SCHEDULE_SCALINGS, STAGE_KINDS, Recipe, Stage
from bvkit.methods.registry import create_method, get_method, list_methods, register_method

__all__ = [
    "DATASET_SETTINGS", "DEVICE_DATA_STAGES", "LOSS_RULES", "NAMED_SETTINGS", "PRECISIONS", "SCHEDULE_SCALINGS",
    "RECIPE_CHECKS", "STAGE_KINDS", "STAGE_OPTION_RULES", "DatasetSetting", "Recipe", "Stage",
    "apply_overrides", "check_declared", "check_recipe", "create_method", "for_dataset",
    "get_method", "list_methods", "named_overrides", "parse_overrides", "register_method",
]
