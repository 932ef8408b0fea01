"""Study specs: a TOML file naming the data, the subset protocol, training defaults and methods.

```toml
name = "demo"                 # optional
seeds = [0, 1, 2]             # optional: model seeds of every method (see below)
plugins = ["lab_methods"]     # optional: modules registering your own methods (bvkit.plugins)

[data]
dataset = "cifar100-lt"       # required
root = "/data"                # optional; default $BVKIT_DATA
imbalance = 100.0             # >= 1
profile = "exp"               # "exp" or "step"
seed = 0                      # which images form the long-tailed set
n_max = 200                   # optional: images of the largest class (default: the dataset's)

[subsets]
scheme = "redraw"             # redraw | bootstrap | split | subsample | seeds (alias none)
count = 10                    # D, >= 2
seed = 0
fraction = 0.5                # subsample only

[train]                       # defaults for every method; a method may override any of them
epochs = 200
batch_size = 128
lr = 0.1
device = "auto"              # auto, cpu, cuda, cuda:N
precision = "auto"           # auto (bf16 where the hardware has it fast), bf16, fp32
schedule_scaling = "proportional"  # a run shorter than the recipe's 200: proportional, keep-steps, min-share
tensorboard = false           # epoch scalars in each run's tensorboard/ (not part of the run id)
compile = "auto"              # the training forward through torch.compile: auto (where measured to pay), on, off
model_width = 16
seed = 0                      # model seed of run d is seed + d ...
pin_seed = false              # ... or seed for every run when true
options = { val_per_class = 50 }   # recipe overrides (bvkit.methods.parse_overrides)

[[methods]]
name = "CE"                   # label: file names, table rows
method = "ce"                 # registry name (bvkit.methods)
options = { "model_kwargs.num_experts" = 2 }
```

Subsets and seeds: with a resampling scheme run d trains on subset d; its model seed is
``seed + d`` (or ``seed`` with ``pin_seed``), or ``seeds[d]`` when a ``seeds`` list (length
``count``) is given. With scheme ``seeds`` every run trains on the long-tailed set itself and
the runs differ by model seed only: the ``seeds`` list (top level or per method) or
``seed + d`` for d < ``count``.

Each section's keys are declared with their constraints (``DATA``, ``SUBSETS``, ``TRAIN``,
``METHOD``) and checked by one function, ``check_table``; an error names the file, the table,
the key and the rule in one line. The subset protocols are described in ``docs/subsets.md``,
the study directory in ``docs/formats.md``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from bvkit.data import list_datasets
from bvkit.data.profiles import PROFILES
from bvkit.errors import BvkitError
from bvkit.plugins import load_plugins
from bvkit.methods import PRECISIONS, SCHEDULE_SCALINGS, Recipe, create_method, list_methods, named_overrides, parse_overrides
from bvkit.train.compiling import COMPILE_MODES
from bvkit.train.devices import DEVICE_NAMES, check_device

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

RESAMPLING_SCHEMES = ("redraw", "bootstrap", "split", "subsample")
SEED_SCHEMES = ("seeds", "none")
PACK_MODES = ("auto", "always", "never")  # [train] pack and --pack (bvkit.study.packs)
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class DataSpec:
    dataset: str
    root: str | None = None
    imbalance: float = 100.0
    profile: str = "exp"
    seed: int = 0
    n_max: int | None = None


@dataclass(frozen=True)
class SubsetSpec:
    scheme: str
    count: int | None
    seed: int = 0
    fraction: float | None = None

    @property
    def resamples(self) -> bool:
        return self.scheme in RESAMPLING_SCHEMES


@dataclass(frozen=True)
class MethodSpec:
    """One ``[[methods]]`` entry with the ``[train]`` defaults already merged in."""

    name: str
    method: str
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    model_width: int | None = None
    seeds: tuple[int, ...] = ()
    options: dict = field(default_factory=dict)
    pack: str = "auto"  # train runs of this method packed: auto (on CUDA only), always, never
    pack_size: int = 8
    precision: str = "auto"  # the recipe's precision; "auto" adds no override
    schedule_scaling: str | None = None  # the recipe's rule for moving milestones (None: the recipe's own)
    tensorboard: bool = False  # epoch scalars in each run's tensorboard/ (logging: not in the run id)
    compile: str = "auto"  # the training forward through torch.compile (engine: not in the run id)
    recipe: Recipe | None = field(default=None, compare=False)  # resolved once, when the spec is read

    @property
    def overrides(self) -> dict[str, Any]:
        """The recipe overrides of every run of this method: ``options`` and the named
        settings, as ``bvkit.methods`` keys (what the training call takes)."""
        return {**self.options, **named_overrides(epochs=self.epochs, batch_size=self.batch_size,
                                                  lr=self.lr, model_width=self.model_width,
                                                  precision=None if self.precision == "auto" else self.precision,
                                                  schedule_scaling=self.schedule_scaling)}


@dataclass(frozen=True)
class StudySpec:
    data: DataSpec
    subsets: SubsetSpec
    methods: tuple[MethodSpec, ...]
    name: str = "study"
    description: str = ""
    text: str = ""
    source: str = "spec.toml"
    plugins: tuple[str, ...] = ()  # modules imported before anything runs (bvkit.plugins)
    folder: str = "."  # where the spec's plugins are looked for first: the spec file's folder

    @property
    def n_subsets(self) -> int:
        """How many distinct training-index arrays the study needs (subsets.npz entries)."""
        return max(len(m.seeds) for m in self.methods)

    def method(self, name: str) -> MethodSpec:
        for method in self.methods:
            if method.name == name:
                return method
        raise BvkitError(f"{self.source}: no method named {name!r}")


# ---------------------------------------------------------------- declared constraints


@dataclass(frozen=True)
class Rule:
    """One key's constraint: ``test(value)`` holds, else "KEY must TEXT, got VALUE";
    ``convert`` gives the stored value."""

    text: str
    test: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda value: value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int | None = None) -> Rule:
    bound = "" if minimum is None else f" >= {minimum}"
    return Rule(f"be an integer{bound}", lambda v: _is_int(v) and (minimum is None or v >= minimum))


def number(rule: str = "", check: Callable[[float], bool] = lambda v: True) -> Rule:
    return Rule(f"be a number{rule}", lambda v: _is_number(v) and check(v), float)


def one_of(choices: tuple[str, ...]) -> Rule:
    return Rule(f"be one of {', '.join(choices)}", lambda v: isinstance(v, str) and v in choices)


def _is_device(value) -> bool:
    try:
        check_device(value)
    except BvkitError:
        return False
    return True


def _are_seeds(value) -> bool:
    return (isinstance(value, list) and len(value) >= 2 and all(_is_int(s) and s >= 0 for s in value)
            and len(set(value)) == len(value))


STRING = Rule("be a non-empty string", lambda v: isinstance(v, str) and bool(v))
TEXT = Rule("be a string", lambda v: isinstance(v, str))
BOOLEAN = Rule("be true or false", lambda v: isinstance(v, bool))
SEEDS = Rule("be a list of at least 2 distinct integers >= 0", _are_seeds, tuple)
DEVICE = Rule(f"be one of {DEVICE_NAMES}", _is_device)
OPTIONS = Rule("be a table of recipe overrides", lambda v: isinstance(v, dict), parse_overrides)
LABEL = Rule("use letters, digits, '.', '_', '+', '-' (it names files)",
             lambda v: isinstance(v, str) and bool(LABEL_PATTERN.match(v)))

PLUGINS = Rule("be a list of module names", lambda v: isinstance(v, list) and all(
    isinstance(m, str) and m and all(part.isidentifier() for part in m.split(".")) for m in v), tuple)

TOP = {"name": STRING, "description": TEXT, "seeds": SEEDS, "plugins": PLUGINS, "data": None, "subsets": None, "train": None,
       "methods": None}  # None: a table checked with its own rules below
DATA = {"dataset": STRING, "root": STRING, "imbalance": number(" >= 1", lambda v: v >= 1),
        "profile": one_of(PROFILES), "seed": integer(0), "n_max": integer(1)}
SUBSETS = {"scheme": one_of(RESAMPLING_SCHEMES + SEED_SCHEMES), "count": integer(2), "seed": integer(0),
           "fraction": number(" in (0, 1]", lambda v: 0 < v <= 1)}
TRAIN = {"epochs": integer(1), "batch_size": integer(1), "lr": number(" > 0", lambda v: v > 0),
         "device": DEVICE, "model_width": integer(1), "seed": integer(0), "pin_seed": BOOLEAN,
         "options": OPTIONS, "pack": one_of(PACK_MODES), "pack_size": integer(1), "precision": one_of(PRECISIONS),
         "schedule_scaling": one_of(SCHEDULE_SCALINGS), "tensorboard": BOOLEAN,
         "compile": one_of(COMPILE_MODES)}
METHOD = {"name": LABEL, "method": STRING, "seeds": SEEDS, **TRAIN}


def check_table(table: dict, rules: dict[str, Rule | None], where: str, required: tuple[str, ...] = ()) -> dict:
    """The values of ``table`` checked against ``rules`` (an unknown key, a missing required
    key or a value breaking its rule is a one-line error naming ``where``), converted."""
    for key in table:
        if key not in rules:
            _fail(where, f"has unknown key {key!r} (known: {', '.join(rules)})")
    for key in required:
        if key not in table:
            _fail(where, f"needs {key!r}")
    values = {}
    for key, rule in rules.items():
        if key in table and rule is not None:
            if not rule.test(table[key]):
                _fail(where, f"{key} must {rule.text}, got {table[key]!r}")
            values[key] = rule.convert(table[key])
    return values


def _fail(where: str, message: str):
    raise BvkitError(f"{where} {message}")


# ---------------------------------------------------------------- reading a spec


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec file; errors name the file, the key and the problem."""
    path = Path(path)
    if not path.is_file():
        raise BvkitError(f"{path}: no such study spec file")
    return parse_spec(_read_text(path), source=str(path))


def parse_spec(text: str, source: str = "spec.toml") -> StudySpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise BvkitError(f"{source}: not valid TOML: {err}") from None
    try:
        return _study(raw, text, source)
    except BvkitError as err:
        raise BvkitError(f"{source}: {err}") from None


def spec_of(study_dir: str | Path) -> StudySpec:
    """The spec a study directory was run with (its ``spec.toml``)."""
    path = Path(study_dir) / "spec.toml"
    if not path.is_file():
        raise BvkitError(f"{study_dir}: not a study directory (no spec.toml)")
    return parse_spec(_read_text(path), source=str(path))


def _read_text(path: Path) -> str:
    """A spec file's text; TOML is UTF-8, anything else is a one-line error naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BvkitError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); "
                         f"save the spec as UTF-8") from None


def preset_path(name: str) -> Path:
    """A spec shipped inside the package (``bvkit/study/presets/NAME``)."""
    return Path(str(resources.files("bvkit.study") / "presets" / name))


def _section(raw: dict, name: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        _fail(f"[{name}]", f"must be a table, got {value!r}")
    return value


def _study(raw: dict, text: str, source: str) -> StudySpec:
    top = check_table(raw, TOP, "top level")
    plugins = top.get("plugins", ())
    folder = str(Path(source).resolve().parent)
    load_plugins(plugins, [folder])  # before the methods are checked: a plugin may register them
    data = DataSpec(**check_table(_section(raw, "data"), DATA, "[data]", required=("dataset",)))
    if data.dataset not in list_datasets():
        _fail("[data]", f"dataset {data.dataset!r} is unknown (known: {', '.join(list_datasets())})")
    subsets = _subsets(check_table(_section(raw, "subsets"), SUBSETS, "[subsets]"))
    defaults = check_table(_section(raw, "train"), TRAIN, "[train]")
    entries = raw.get("methods")
    if not isinstance(entries, list) or not entries:
        _fail("[[methods]]", "must list at least one method (a [[methods]] table with name and method)")
    methods = [_method(entry, i, defaults, top.get("seeds", ()), data, subsets)
               for i, entry in enumerate(entries, 1)]
    labels = [m.name for m in methods]
    for label in labels:
        if labels.count(label) > 1:
            _fail("[[methods]]", f"name {label!r} is used twice (names label files and rows)")
    return StudySpec(data, subsets, tuple(methods), top.get("name", "study"), top.get("description", ""),
                     text, source, plugins, folder)


def _subsets(values: dict) -> SubsetSpec:
    where = "[subsets]"
    scheme = values.get("scheme", "redraw")
    if scheme == "none":
        scheme = "seeds"
    if scheme != "seeds" and "count" not in values:
        _fail(where, "needs 'count'")
    fraction = values.get("fraction")
    if fraction is not None and scheme != "subsample":
        _fail(where, f"fraction applies to scheme 'subsample' only (scheme is {scheme!r})")
    if scheme == "subsample" and fraction is None:
        _fail(where, "scheme 'subsample' needs fraction (e.g. fraction = 0.5)")
    return SubsetSpec(scheme, values.get("count"), values.get("seed", 0), fraction)


def _method(entry, index: int, defaults: dict, top_seeds: tuple, data: DataSpec,
            subsets: SubsetSpec) -> MethodSpec:
    where = f"[[methods]] #{index}"
    if not isinstance(entry, dict):
        _fail(where, f"must be a table, got {entry!r}")
    label = check_table({"name": entry["name"]} if "name" in entry else {}, {"name": LABEL}, where,
                        required=("name",))["name"]
    where = f"[[methods]] #{index} ({label!r})"
    values = check_table(entry, METHOD, where, required=("method",))
    settings = {**defaults, **values,
                "options": dict(sorted({**defaults.get("options", {}), **values.get("options", {})}.items()))}
    if settings["method"] not in list_methods():
        _fail(where, f"method {settings['method']!r} is not registered (known: {', '.join(list_methods())})")
    method = MethodSpec(
        name=label, method=settings["method"], epochs=settings.get("epochs"),
        batch_size=settings.get("batch_size"), lr=settings.get("lr"), device=settings.get("device", "auto"),
        model_width=settings.get("model_width"), options=settings["options"],
        seeds=_seeds(values.get("seeds") or top_seeds, settings, subsets, where),
        pack=settings.get("pack", "auto"), pack_size=settings.get("pack_size", 8),
        precision=settings.get("precision", "auto"), schedule_scaling=settings.get("schedule_scaling"),
        tensorboard=settings.get("tensorboard", False), compile=settings.get("compile", "auto"))
    try:
        return replace(method, recipe=create_method(method.method, dataset=data.dataset, **method.overrides))
    except BvkitError as err:
        _fail(where, f"options: {err}")


def _seeds(seeds: tuple, settings: dict, subsets: SubsetSpec, where: str) -> tuple[int, ...]:
    """Model seeds of the method's runs (see the module docstring)."""
    base = settings.get("seed", 0)
    if subsets.scheme == "seeds":
        if not seeds:
            if subsets.count is None:
                _fail(where, "needs seeds (or [subsets] count) with scheme 'seeds'")
            seeds = tuple(base + d for d in range(subsets.count))
    else:
        if seeds and len(seeds) != subsets.count:
            _fail(where, f"seeds has {len(seeds)} entries; [subsets] count is {subsets.count}")
        if not seeds:
            pinned = settings.get("pin_seed", False)
            seeds = tuple(base if pinned else base + d for d in range(subsets.count))
    return tuple(seeds)
