"""timm-style model registry: ``@register_model`` builders, ``create_model``, ``list_models``."""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from bvkit.errors import BvkitError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelEntry] = {}
# the built-in architectures register themselves when imported; loaded on the first look-up
_BUILT_IN = ("bvkit.models.resnet_cifar", "bvkit.models.resnet_imagenet", "bvkit.models.ride",
             "bvkit.models.bbn", "bvkit.models.oltr")


def _load_built_in() -> None:
    for module in _BUILT_IN:
        importlib.import_module(module)


def register_model(name: str | None = None, *, tags: tuple[str, ...] = ()):
    """Decorator: register ``builder(num_classes, **kw) -> nn.Module`` under ``name``."""

    def decorate(builder: Callable) -> Callable:
        key = name or builder.__name__.replace("_", "-")
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        _REGISTRY[key] = ModelEntry(key, builder, tuple(tags))
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern`` (e.g. ``"ride*"``), sorted."""
    _load_built_in()
    return sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))


def model_entry(name: str) -> ModelEntry:
    _load_built_in()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models())
        raise BvkitError(f"unknown model {name!r} (known: {known})") from None


def create_model(name: str, num_classes: int, **kwargs):
    """Build the registered model ``name`` for ``num_classes`` classes."""
    if int(num_classes) < 1:
        raise BvkitError(f"num_classes must be >= 1, got {num_classes}")
    builder = model_entry(name).builder
    try:
        inspect.signature(builder).bind(num_classes=int(num_classes), **kwargs)
    except TypeError as err:
        raise BvkitError(f"bad arguments for model {name!r}: {err}") from None
    return builder(num_classes=int(num_classes), **kwargs)
