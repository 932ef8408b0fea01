"""The one override grammar of recipes (study specs, ``bvkit train --set``, ``create_method``'s
keywords): ``parse_overrides`` reads flat dotted keys, ``apply_overrides`` applies them to a
recipe, each value coerced to its field's type, and checks the result."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import Any

from bvkit.errors import BvkitError
from bvkit.methods.checks import check_recipe
from bvkit.methods.recipe import STAGE_KINDS, Recipe, Stage

# The named settings of ``bvkit train`` flags and study specs, as recipe override keys.
NAMED_SETTINGS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                  "model_width": "model_kwargs.width", "experts": "model_kwargs.num_experts",
                  "teacher": "teacher", "precision": "precision",
                  "schedule_scaling": "schedule_scaling"}
_DICT_FIELDS = tuple(f.name for f in fields(Recipe) if f.type == "dict")


def named_overrides(**settings: Any) -> dict[str, Any]:
    """The settings given (not None) as override keys: ``model_width=8`` -> ``model_kwargs.width``."""
    return {NAMED_SETTINGS[name]: value for name, value in settings.items() if value is not None}


def parse_overrides(settings: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """The one override grammar (study specs, ``bvkit train --set``, ``create_method``): flat
    dotted keys. Keys: a Recipe field (``epochs``); ``dict_field.key`` (``model_kwargs.width``);
    ``stage.field`` or ``stage.options.key`` for a second stage by kind (``crt.epochs``).

    ``settings``: a mapping (``__`` is a dot; a nested mapping under a dict field, a stage or its
    ``options`` becomes dotted keys) or ``KEY=VALUE`` strings (a Python/JSON literal, ``true``,
    ``false``, ``none``, else a string).
    """
    if settings is None:
        return {}
    if isinstance(settings, Mapping):
        return dict(_flatten(settings.items(), ""))
    items = []
    for item in settings:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise BvkitError(f"--set expects KEY=VALUE, got {item!r}")
        items.append((key.strip(), _literal(raw.strip())))
    return dict(_flatten(items, ""))


def _flatten(items, prefix: str):
    for key, value in items:
        name = prefix + str(key).replace("__", ".")
        if isinstance(value, Mapping) and value and _nests(name):
            yield from _flatten(value.items(), name + ".")
        else:
            yield name, value


def _nests(name: str) -> bool:
    """Whether a mapping under ``name`` is a table of further keys (not a value)."""
    parts = name.split(".")
    if parts[0] in STAGE_KINDS:
        return len(parts) == 1 or parts[1:] == ["options"]
    return parts[0] in _DICT_FIELDS and len(parts) == 1


def _literal(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(lowered)
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any] | Iterable[str] | None) -> Recipe:
    """``recipe`` with ``overrides`` (``parse_overrides``' grammar) applied, each value
    coerced to its field's type, and the result checked."""
    for key, value in parse_overrides(overrides).items():
        recipe = _apply_one(recipe, key, value)
    check_recipe(recipe)
    return recipe


def _apply_one(recipe: Recipe, key: str, value: Any) -> Recipe:
    head, _, rest = key.partition(".")
    names = {f.name: f for f in fields(Recipe)}
    stage_kinds = {stage.kind: i for i, stage in enumerate(recipe.stages)}
    if head in stage_kinds and rest:
        stages = list(recipe.stages)
        stages[stage_kinds[head]] = _apply_stage(stages[stage_kinds[head]], rest, value)
        return replace(recipe, stages=tuple(stages))
    if head not in names or head in ("name", "stages"):
        known = sorted(set(names) - {"name", "stages"}) + [f"{kind}.<field>" for kind in stage_kinds]
        raise BvkitError(f"unknown setting {key!r} for method {recipe.name!r}; known: {', '.join(known)}")
    current = getattr(recipe, head)
    if isinstance(current, dict):
        merged = dict(current)
        if rest:
            merged[rest] = value
        elif isinstance(value, dict):
            merged.update(value)
        else:
            raise BvkitError(f"{key} takes key=value pairs, e.g. {key}.NAME=VALUE")
        return replace(recipe, **{head: merged})
    if rest:
        raise BvkitError(f"setting {head!r} has no sub-keys (got {key!r})")
    return replace(recipe, **{head: _coerce(head, current, value)})


def _apply_stage(stage: Stage, key: str, value: Any) -> Stage:
    head, _, rest = key.partition(".")
    names = {f.name for f in fields(Stage)} - {"kind"}
    if head == "options" and rest:
        return replace(stage, options={**stage.options, rest: value})
    if head not in names or rest:
        raise BvkitError(f"unknown setting {stage.kind}.{key}; known: {', '.join(sorted(names))}")
    return replace(stage, **{head: _coerce(f"{stage.kind}.{head}", getattr(stage, head), value)})


_OPTIONAL = {"drw_epoch": 0, "teacher": ""}  # None means "off"; otherwise typed like the value


def _coerce(name: str, current: Any, value: Any) -> Any:
    if name in _OPTIONAL:
        if value is None:
            return None
        current = _OPTIONAL[name]
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise BvkitError(f"{name} must be true or false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if current is not None:
            raise BvkitError(f"{name} must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise BvkitError(f"{name} must be a number, got {value!r}")
    if isinstance(current, tuple):
        if isinstance(value, (list, tuple, int, float)):
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)
        raise BvkitError(f"{name} must be a list, got {value!r}")
    return value
