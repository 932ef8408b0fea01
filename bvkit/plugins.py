"""Plugins: a researcher's own methods, models, losses or procedures, registered through the
public registries (``bvkit.methods.register_method``, ``bvkit.models.register_model``,
``bvkit.losses.register_loss``, ``bvkit.train.procedures.register_procedure``) by a module that
bvkit imports before anything runs (``docs/guide.md``, "Writing a plugin").

Where a plugin comes from: a study spec's top-level ``plugins = ["lab_methods"]`` (found first in
the spec file's folder, then on ``sys.path``), ``bvkit train --plugin MODULE`` (the current
directory first, then ``sys.path``), and installed packages through the entry-point group
``bvkit.plugins`` (loaded on start). Every worker process of a study imports the study's plugins
before it trains. A plugin's source is part of each run's identity (``plugin_digest``), so the
cache never mixes results of two versions of a plugin.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from bvkit.errors import BvkitError

ENTRY_POINT_GROUP = "bvkit.plugins"
_loaded: dict[str, Path | None] = {}  # module name -> its source file (None: no file)


def _find_in(name: str, folders: Iterable[str | Path]) -> Path | None:
    """``name.py`` or ``name/__init__.py`` in the first folder holding one."""
    relative = Path(*name.split("."))
    for folder in folders:
        for candidate in (Path(folder) / relative.with_suffix(".py"), Path(folder) / relative / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


def load_plugin(name: str, folders: Iterable[str | Path] = ()) -> Path | None:
    """Import the plugin module ``name`` once per process (searched in ``folders`` first, then on
    ``sys.path``); returns its source file. Any failure is one ``BvkitError`` line naming it."""
    if not isinstance(name, str) or not name or not all(part.isidentifier() for part in name.split(".")):
        raise BvkitError(f"plugin {name!r}: not a module name")
    if name in _loaded:
        return _loaded[name]
    path = _find_in(name, folders)
    try:
        if path is not None:
            spec = importlib.util.spec_from_file_location(
                name, path, submodule_search_locations=[str(path.parent)] if path.name == "__init__.py" else None)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(name)
            path = Path(module.__file__).resolve() if getattr(module, "__file__", None) else None
    except ModuleNotFoundError as err:
        if err.name == name and path is None:
            where = ", ".join(str(f) for f in folders)
            raise BvkitError(f"plugin {name!r}: no such module (looked in {where + ', ' if where else ''}sys.path)") from None
        raise BvkitError(f"plugin {name!r} could not be imported: {err}") from None
    except BvkitError as err:
        raise BvkitError(f"plugin {name!r}: {err}") from None
    except Exception as err:  # a plugin's own bug: name the module and the error, no traceback
        raise BvkitError(f"plugin {name!r} raised {type(err).__name__}: {err}") from None
    _loaded[name] = path
    return path


def load_plugins(names: Iterable[str], folders: Iterable[str | Path] = ()) -> list[Path | None]:
    """``load_plugin`` for each of ``names``, in order (entry-point plugins first)."""
    load_entry_points()
    folders = list(folders)
    return [load_plugin(name, folders) for name in names]


def load_entry_points() -> list[str]:
    """Import every installed package's ``bvkit.plugins`` entry point once; returns their names."""
    names = []
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry-point:{entry.name}"
        if key not in _loaded:
            try:
                entry.load()
            except BvkitError as err:
                raise BvkitError(f"plugin entry point {entry.name!r} ({entry.value}): {err}") from None
            except Exception as err:
                raise BvkitError(f"plugin entry point {entry.name!r} ({entry.value}) raised "
                                 f"{type(err).__name__}: {err}") from None
            _loaded[key] = None
        names.append(entry.name)
    return names


def plugin_digest(names: Iterable[str], folders: Iterable[str | Path] = ()) -> str:
    """A hash of the plugins' names and source files (a package: every ``.py`` under it); ``""``
    without plugins, so runs of studies without plugins keep their ids."""
    names = list(names)
    if not names:
        return ""
    folders = list(folders)
    digest = hashlib.sha256()
    for name in names:
        path = load_plugin(name, folders)
        digest.update(name.encode())
        files = sorted(path.parent.rglob("*.py")) if path is not None and path.name == "__init__.py" else [path]
        for file in files:
            if file is not None:
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
