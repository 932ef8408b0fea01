"""What a valid recipe is: ``check_recipe`` (run whenever a recipe is made or overridden: a bad
setting is one line, exit code 2), the declared constraints of the loss and stage settings of
the methods since RIDE, and ``RECIPE_CHECKS``, where a module registering methods adds its own."""

from __future__ import annotations

import math

from bvkit.errors import BvkitError
from bvkit.methods.recipe import PRECISIONS, SCHEDULE_SCALINGS, STAGE_KINDS, Recipe

# ---------------------------------------------------------------- declared constraints
# By loss name / stage kind, each known key's rule (text, test); keys not declared here are
# left to the loss or stage that reads them.


def _number(test):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and test(v)


_NONNEGATIVE = ("a number >= 0", _number(lambda v: v >= 0))
_FRACTION = ("a number in [0, 1)", _number(lambda v: 0 <= v < 1))
_PROBABILITY = ("a number in [0, 1]", _number(lambda v: 0 <= v <= 1))
LOSS_RULES = {"logit-adjustment": {"tau": _NONNEGATIVE}, "sade": {"tau": _NONNEGATIVE}}
STAGE_OPTION_RULES = {
    "posthoc-adjust": {"tau_grid": ("a non-empty list of numbers >= 0", lambda v: isinstance(v, (list, tuple))
                                    and len(v) > 0 and all(_NONNEGATIVE[1](t) for t in v))},
    "maxnorm": {"thresh": _NONNEGATIVE, "max_norm": ("a number > 0 or none", lambda v: v is None or _number(lambda b: b > 0)(v)),
                "beta": _FRACTION},
    "sade-tta": {"min_weight": _FRACTION, "jitter": _NONNEGATIVE, "jitter_p": _PROBABILITY, "grayscale_p": _PROBABILITY},
}


def check_declared(recipe: Recipe) -> None:
    """The declared rules of ``recipe``'s loss and stage options, and SADE's three experts."""
    for key, (text, test) in LOSS_RULES.get(recipe.loss, {}).items():
        if key in recipe.loss_kwargs and not test(recipe.loss_kwargs[key]):
            raise BvkitError(f"loss_kwargs.{key} must be {text}, got {recipe.loss_kwargs[key]!r}")
    for stage in recipe.stages:
        rules = STAGE_OPTION_RULES.get(stage.kind)
        if rules is None:
            continue
        unknown = sorted(set(stage.options) - set(rules))
        if unknown:
            raise BvkitError(f"unknown setting {stage.kind}.options.{unknown[0]}; known: "
                             f"{', '.join(f'{stage.kind}.options.{k}' for k in rules)}")
        for key, (text, test) in rules.items():
            if key in stage.options and not test(stage.options[key]):
                raise BvkitError(f"{stage.kind}.options.{key} must be {text}, got {stage.options[key]!r}")
    experts = recipe.model_kwargs.get("num_experts")
    if recipe.loss == "sade" and experts is not None and experts != 3:
        raise BvkitError(f"SADE's loss trains exactly 3 experts (forward, uniform, backward), got num_experts={experts!r}")


RECIPE_CHECKS: list = [check_declared]  # check(recipe) raising BvkitError, from the modules registering methods


# ---------------------------------------------------------------- every recipe


def check_recipe(recipe: Recipe) -> None:
    """Raise a one-line ``BvkitError`` for the first setting of ``recipe`` that is out of range,
    then run ``RECIPE_CHECKS``."""
    positive = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "val_per_class": recipe.val_per_class}
    for name, value in positive.items():
        if not isinstance(value, int) or value < 1:
            raise BvkitError(f"{name} must be a positive integer, got {value!r}")
    if not recipe.lr > 0:
        raise BvkitError(f"lr must be positive, got {recipe.lr!r}")
    if recipe.precision not in PRECISIONS:
        raise BvkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {recipe.precision!r}")
    if recipe.schedule_scaling not in SCHEDULE_SCALINGS:
        raise BvkitError(f"schedule_scaling must be one of {', '.join(SCHEDULE_SCALINGS)}, "
                         f"got {recipe.schedule_scaling!r}")
    if recipe.schedule not in ("step", "cosine", "constant"):
        raise BvkitError(f"schedule must be step, cosine or constant, got {recipe.schedule!r}")
    if len(recipe.lr_milestones) != len(recipe.lr_factors):
        raise BvkitError("lr_milestones and lr_factors must have the same length")
    for stage in recipe.stages:
        if stage.kind not in STAGE_KINDS:
            raise BvkitError(f"unknown stage {stage.kind!r} (known: {', '.join(STAGE_KINDS)})")
        if stage.epochs < 0 or stage.batch_size < 1 or not stage.lr > 0:
            raise BvkitError(f"stage {stage.kind}: epochs >= 0, batch_size >= 1 and lr > 0 needed")
    if recipe.procedure is not None and (recipe.stages or recipe.teacher is not None):
        raise BvkitError(f"method {recipe.name!r}: a procedure recipe takes no second stage or teacher")
    experts = recipe.model_kwargs.get("num_experts")
    if experts is not None:
        if not recipe.is_ride:
            raise BvkitError(f"method {recipe.name!r} has no experts (model {recipe.model}); --experts is for ride*")
        minimum = 2 if any(stage.kind == "routing" for stage in recipe.stages) else 1
        if not isinstance(experts, int) or experts < minimum:
            raise BvkitError(f"num_experts must be an integer >= {minimum} for {recipe.name}, got {experts!r}")
    for check in RECIPE_CHECKS:
        check(recipe)
