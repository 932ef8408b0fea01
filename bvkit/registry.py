"""One registry pattern (timm's) for every named thing: models, methods, losses, procedures,
data sources and subset schemes.

A ``Registry`` maps a name to an entry. ``register`` refuses a name twice unless
``overwrite=True`` (a ``BvkitError`` naming the kind and the name); ``get`` of an unknown name is a
``BvkitError`` listing the known names; ``names(pattern)`` filters with case-sensitive
``fnmatch`` and sorts. Built-in entries that live in modules of their own are imported on the
first look-up (``built_in``), so importing a registry never imports torch.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bvkit.errors import BvkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one ``kind`` ("model", "method", ...)."""

    def __init__(self, kind: str, built_in: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.built_in = tuple(built_in)
        self._entries: dict[str, T] = {}
        self._loaded = not self.built_in

    def _load_built_in(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.built_in:
                importlib.import_module(module)

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` under ``name``; a name already taken raises unless ``overwrite``."""
        if not isinstance(name, str) or not name:
            raise BvkitError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not overwrite:
            raise BvkitError(f"{self.kind} {name!r} is already registered (pass overwrite=True to replace it)")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str | None = None, *, overwrite: bool = False,
                  wrap: Callable[[str, Callable], T] | None = None) -> Callable[[Callable], Callable]:
        """``@registry.decorator("name")``: register the decorated function (default name: the
        function's name with ``_`` as ``-``); ``wrap(name, fn)`` builds the stored entry."""

        def decorate(fn: Callable) -> Callable:
            key = name or fn.__name__.replace("_", "-")
            self.register(key, wrap(key, fn) if wrap else fn, overwrite=overwrite)
            return fn

        return decorate

    def get(self, name: str) -> T:
        self._load_built_in()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise BvkitError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the case-sensitive fnmatch ``pattern``, sorted."""
        self._load_built_in()
        return sorted(name for name in self._entries if fnmatch.fnmatchcase(name, pattern))

    def __contains__(self, name: object) -> bool:
        self._load_built_in()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_built_in()
        return len(self._entries)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugins that replace an entry)."""
        self._entries.pop(name, None)
