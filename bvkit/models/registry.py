"""timm-style model registry: ``@register_model`` builders, ``create_model``, ``list_models``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from bvkit.errors import BvkitError
from bvkit.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable
    tags: tuple[str, ...] = field(default_factory=tuple)


# the built-in architectures register themselves when imported, on the first look-up
MODELS: Registry[ModelEntry] = Registry("model", built_in=(
    "bvkit.models.resnet_cifar", "bvkit.models.resnet_imagenet", "bvkit.models.ride",
    "bvkit.models.bbn", "bvkit.models.oltr", "bvkit.models.sade", "bvkit.models.resnet34_cifar"))


def register_model(name: str | None = None, *, tags: tuple[str, ...] = (), overwrite: bool = False):
    """Decorator: register ``builder(n_classes, **kw) -> nn.Module`` under ``name``."""
    return MODELS.decorator(name, overwrite=overwrite,
                            wrap=lambda key, builder: ModelEntry(key, builder, tuple(tags)))


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern`` (e.g. ``"ride*"``), sorted."""
    return MODELS.names(pattern)


def model_entry(name: str) -> ModelEntry:
    return MODELS.get(name)


def create_model(name: str, n_classes: int, **kwargs):
    """Build the registered model ``name`` for ``n_classes`` classes."""
    if int(n_classes) < 1:
        raise BvkitError(f"n_classes must be >= 1, got {n_classes}")
    builder = model_entry(name).builder
    try:
        inspect.signature(builder).bind(n_classes=int(n_classes), **kwargs)
    except TypeError as err:
        raise BvkitError(f"bad arguments for model {name!r}: {err}") from None
    return builder(n_classes=int(n_classes), **kwargs)
