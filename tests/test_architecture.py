"""The layers import one way, as docs/architecture.md's table says: every module lies in a layer
of the table and imports only what its row allows; nothing reaches a layer above its own. Read
from the source with ``ast``, every import counted wherever it stands (a lazy import inside a
function is a dependency too), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bvkit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The bvkit modules ``path`` imports (a ``from pkg import name`` counts ``pkg.name`` when
    that is a module, else ``pkg``), plus third-party top-level names, prefixed ``ext:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                     for alias in node.names]
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") \
                and node.args and isinstance(node.args[0], ast.Constant):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            if name == "bvkit" or name.startswith("bvkit."):
                while name not in known and "." in name:
                    name = name.rpartition(".")[0]
                if name != this:
                    found.add(name)
            else:
                found.add("ext:" + name.split(".")[0])
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def _reachable(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_graph_is_read(graph):
    assert len(graph) > 40
    assert "bvkit.errors" in graph["bvkit.registry"]
    assert "ext:torch" in graph["bvkit.models.resnet_cifar"]


def test_no_import_circles(graph):
    """No module reaches itself through bvkit imports, a package's own ``__init__`` aside
    (a package face re-exporting its submodules is not a circle of jobs)."""
    edges = {m: {n for n in deps if not (_in(m, n) and module_name_is_package(n))}
             for m, deps in graph.items()}
    assert sorted(m for m in edges if m in _reachable(edges, m)) == []


def module_name_is_package(name: str) -> bool:
    return (PACKAGE.parent / Path(*name.split(".")) / "__init__.py").is_file()


# docs/architecture.md's table, floor by floor: each layer and what it may import besides itself
FLOOR_0 = ("bvkit.data", "bvkit.predictions", "bvkit.registry", "bvkit.lazy", "bvkit.errors", "bvkit.atomic",
           "bvkit.plugins")  # plugins.py is not in the table: it imports errors only and loads users' modules
ALLOWED = {
    "bvkit.cli": ("bvkit",), "bvkit.pipeline": ("bvkit",), "bvkit.pipeline_commands": ("bvkit",),  # everything
    "bvkit.__main__": ("bvkit",),
    "bvkit.report": ("bvkit.study.reader", "bvkit.decomposition", "bvkit.data", *FLOOR_0),  # study: its reader
    "bvkit.study": ("bvkit.train", "bvkit.methods", "bvkit.methods_since_ride", "bvkit.decomposition", *FLOOR_0),
    "bvkit.train": ("bvkit.methods", "bvkit.methods_since_ride", "bvkit.models", "bvkit.losses", *FLOOR_0),
    "bvkit.methods": ("bvkit.registry", "bvkit.errors", "bvkit.methods_since_ride"),
    "bvkit.methods_since_ride": ("bvkit.registry", "bvkit.errors", "bvkit.methods"),
    "bvkit.models": FLOOR_0,
    "bvkit.losses": FLOOR_0,
    "bvkit.decomposition": FLOOR_0,
    **{layer: FLOOR_0 for layer in FLOOR_0},
}


def layer_of(module: str) -> str | None:
    return max((layer for layer in ALLOWED if _in(module, layer)), key=len, default=None)


def bvkit_imports(graph, module: str) -> set[str]:
    """``module``'s bvkit imports but the root package: Python loads ``bvkit/__init__.py`` before
    any bvkit module (``from bvkit import __version__`` adds nothing), and what ``import bvkit``
    loads is checked on its own (below)."""
    return {t for t in graph[module] if t != "bvkit" and not t.startswith("ext:")}


def test_every_module_lies_in_a_layer_of_the_table(graph):
    assert sorted(m for m in graph if m != "bvkit" and layer_of(m) is None) == []


def test_each_layer_imports_only_what_the_table_allows(graph):
    """Every import of every module, lazy ones included, lies in its own layer or one the table
    lets it import; so, by induction, does everything it reaches."""
    offending = sorted(
        f"{module} -> {target}"
        for module in graph if layer_of(module) is not None  # the test above names those without
        for target in bvkit_imports(graph, module)
        if not _in(target, layer_of(module)) and not any(_in(target, a) for a in ALLOWED[layer_of(module)])
    )
    assert offending == []


TOP = ("bvkit.pipeline", "bvkit.pipeline_commands", "bvkit.cli")  # floor 6: nothing below reaches it


@pytest.mark.parametrize("layer, forbidden", [
    ("bvkit.decomposition", ("ext:torch", "bvkit.train", "bvkit.models", "bvkit.losses",
                             "bvkit.methods", "bvkit.study", "bvkit.report", *TOP)),
    ("bvkit.train", ("bvkit.study", "bvkit.report", "bvkit.decomposition", *TOP)),
    ("bvkit.study", ("bvkit.report", *TOP)),
    ("bvkit.report", TOP),  # it reaches train through the study reader (the spec's device checks): floors allow it
    ("bvkit.methods", ("bvkit.data", "bvkit.models", "bvkit.losses", "bvkit.train", "bvkit.study",
                       "bvkit.decomposition", "bvkit.report", *TOP)),
    ("bvkit.losses", ("bvkit.models", "bvkit.methods", "bvkit.train", "bvkit.study", "bvkit.decomposition",
                      "bvkit.report", *TOP)),
    ("bvkit.data", ("bvkit.models", "bvkit.losses", "bvkit.methods", "bvkit.train", "bvkit.study",
                    "bvkit.decomposition", "bvkit.report", *TOP)),
    ("bvkit.models", ("bvkit.losses", "bvkit.methods", "bvkit.train", "bvkit.study", "bvkit.decomposition",
                      "bvkit.report", *TOP)),
    ("bvkit.atomic", ("bvkit.data", "bvkit.predictions", "bvkit.models", "bvkit.losses", "bvkit.methods",
                      "bvkit.train", "bvkit.study", "bvkit.decomposition", "bvkit.report", *TOP)),
])
def test_layers_import_one_way(graph, layer, forbidden):
    """Nothing a layer reaches (transitively) lies in a layer above it (the table's rows, spelt
    out; ``methods`` matches ``methods_since_ride`` too)."""
    edges = {module: graph[module] - {"bvkit"} for module in graph}
    offending = sorted(
        f"{module} -> {target}"
        for module in graph if _in(module, layer) or (layer == "bvkit.methods" and _in(module, "bvkit.methods_since_ride"))
        for target in _reachable(edges, module) | edges[module]
        if any(_in(target, f) or (f == "bvkit.methods" and _in(target, "bvkit.methods_since_ride")) for f in forbidden)
    )
    assert offending == []


def test_no_module_above_about_500_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 520}
    assert long == {}


def test_decomposition_and_report_run_without_torch_loaded():
    code = ("import sys, bvkit, bvkit.decomposition, bvkit.report, bvkit.study.reader; "
            "print(sorted(m for m in ('torch', 'bvkit.train.run', 'bvkit.study.runner') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
