"""Every script under experiments/ still imports against the package (its imports name things
that exist), so a refactor that renames what a benchmark uses fails here, not at the next
recording."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.py")), ids=lambda p: p.name)
def test_experiment_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs the module body only: main() sits behind __name__ == "__main__"
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"
