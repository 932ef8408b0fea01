"""Package faces that import their names on first use, so ``import bvkit.train`` (or
``bvkit.models``, ``bvkit.study``) does not load torch or the runner until a name is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` resolving each name of ``exports`` (name ->
    module) on first use and caching it in the package's ``namespace``."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value
        return value

    return __getattr__
