"""The training-loss registry: a loss name -> ``builder(class_counts, **kw) -> nn.Module``
(``TRAINING_LOSSES``; not the decomposition's losses, ``bvkit.decomposition.LOSSES``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from bvkit.errors import BvkitError
from bvkit.registry import Registry

TRAINING_LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")


def register_loss(name: str, builder: Callable[..., nn.Module], *, overwrite: bool = False) -> None:
    """Make ``builder(class_counts, **kw) -> nn.Module`` the loss ``name``."""
    TRAINING_LOSSES.register(name, builder, overwrite=overwrite)


def list_losses(pattern: str = "*") -> list[str]:
    return TRAINING_LOSSES.names(pattern)


def create_loss(name: str, class_counts, **kw) -> nn.Module:
    """Build the loss registered as ``name`` for these ``class_counts``."""
    builder = TRAINING_LOSSES.get(name)
    try:
        return builder(class_counts, **kw)
    except TypeError as err:
        raise BvkitError(f"bad arguments for loss {name!r}: {err}") from None


def preset(cls, **defaults):
    """A builder of ``cls`` with ``defaults`` (a caller's keywords win); ``builder.loss_class``
    names the class."""
    def build(class_counts, **kw):
        return cls(class_counts, **{**defaults, **kw})

    build.loss_class = cls
    return build
