"""Study specs: a TOML file naming the data, the subset protocol, training defaults and methods.

```toml
name = "demo"                 # optional
seeds = [0, 1, 2]             # optional: model seeds of every method (see below)

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
device = "auto"
model_width = 16
seed = 0                      # model seed of run d is seed + d ...
pin_seed = false              # ... or seed for every run when true
options = { val_per_class = 50 }   # recipe overrides (see bvkit.methods.create_method)

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
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bvkit.errors import BvkitError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

RESAMPLING_SCHEMES = ("redraw", "bootstrap", "split", "subsample")
SEED_SCHEMES = ("seeds", "none")
PROFILES = ("exp", "step")
TRAIN_KEYS = ("epochs", "batch_size", "lr", "device", "model_width", "seed", "pin_seed", "options", "pack", "pack_size")
PACK_MODES = ("auto", "always", "never")
TOP_KEYS = ("name", "description", "seeds", "data", "subsets", "train", "methods")
DATA_KEYS = ("dataset", "root", "imbalance", "profile", "seed", "n_max")
SUBSET_KEYS = ("scheme", "count", "seed", "fraction")
METHOD_KEYS = ("name", "method", "seeds") + TRAIN_KEYS
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


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

    def config(self) -> dict:
        """What defines the trained model (device and packing excluded: they change where and
        how fast, not what)."""
        return {
            "method": self.method,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "model_width": self.model_width,
            "options": self.options,
        }


@dataclass(frozen=True)
class StudySpec:
    data: DataSpec
    subsets: SubsetSpec
    methods: tuple[MethodSpec, ...]
    name: str = "study"
    description: str = ""
    text: str = ""
    source: str = "spec.toml"

    @property
    def n_subsets(self) -> int:
        """How many distinct training-index arrays the study needs (subsets.npz entries)."""
        return max(len(m.seeds) for m in self.methods)

    def method(self, name: str) -> MethodSpec:
        for method in self.methods:
            if method.name == name:
                return method
        raise BvkitError(f"{self.source}: no method named {name!r}")


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec file; errors name the file, the key and the problem."""
    path = Path(path)
    if not path.is_file():
        raise BvkitError(f"{path}: no such study spec file")
    return parse_spec(path.read_text(encoding="utf-8"), source=str(path))


def parse_spec(text: str, source: str = "spec.toml") -> StudySpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise BvkitError(f"{source}: not valid TOML: {err}") from None
    return _Validator(source).study(raw, text)


class _Validator:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str):
        raise BvkitError(f"{self.source}: {where} {message}")

    def table(self, raw: dict, name: str, allowed: tuple[str, ...], where: str) -> dict:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            self.fail(where, f"must be a table, got {value!r}")
        self.known(value, allowed, where)
        return value

    def known(self, table: dict, allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                self.fail(where, f"has unknown key {key!r} (known: {', '.join(allowed)})")

    def integer(self, table, key, where, minimum=None, default=None, required=False):
        if key not in table:
            if required:
                self.fail(where, f"needs {key!r}")
            return default
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            self.fail(where, f"{key} must be an integer{bound}, got {value!r}")
        return value

    def number(self, table, key, where, default=None, check=None, rule=""):
        if key not in table:
            return default
        value = table[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (check is not None and not check(value)):
            self.fail(where, f"{key} must be a number{rule}, got {value!r}")
        return float(value)

    def string(self, table, key, where, default=None, choices=None, required=False):
        if key not in table:
            if required:
                self.fail(where, f"needs {key!r}")
            return default
        value = table[key]
        if not isinstance(value, str) or not value:
            self.fail(where, f"{key} must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(where, f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def seeds(self, table, where) -> tuple[int, ...]:
        if "seeds" not in table:
            return ()
        value = table["seeds"]
        valid = (
            isinstance(value, list)
            and len(value) >= 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
            and len(set(value)) == len(value)
        )
        if not valid:
            self.fail(where, f"seeds must be a list of at least 2 distinct integers >= 0, got {value!r}")
        return tuple(value)

    def study(self, raw: dict, text: str) -> StudySpec:
        self.known(raw, TOP_KEYS, "top level")
        name = self.string(raw, "name", "top level", default="study")
        description = raw.get("description", "")
        if not isinstance(description, str):
            self.fail("top level", f"description must be a string, got {description!r}")
        data = self.data(self.table(raw, "data", DATA_KEYS, "[data]"))
        subsets = self.subsets(self.table(raw, "subsets", SUBSET_KEYS, "[subsets]"))
        defaults = self.train(self.table(raw, "train", TRAIN_KEYS, "[train]"), "[train]", {})
        top_seeds = self.seeds(raw, "top level")
        methods_raw = raw.get("methods")
        if not isinstance(methods_raw, list) or not methods_raw:
            self.fail("[[methods]]", "must list at least one method (a [[methods]] table with name and method)")
        methods = []
        for i, entry in enumerate(methods_raw, 1):
            methods.append(self.method(entry, i, defaults, top_seeds, subsets))
        labels = [m.name for m in methods]
        for label in labels:
            if labels.count(label) > 1:
                self.fail("[[methods]]", f"name {label!r} is used twice (names label files and rows)")
        self.registered([(m.name, m.method) for m in methods])
        return StudySpec(data, subsets, tuple(methods), name, description, text, self.source)

    def data(self, table: dict) -> DataSpec:
        where = "[data]"
        dataset = self.string(table, "dataset", where, required=True)
        known = _known_datasets()
        if known is not None and dataset not in known:
            self.fail(where, f"dataset {dataset!r} is unknown (known: {', '.join(known)})")
        return DataSpec(
            dataset=dataset,
            root=self.string(table, "root", where),
            imbalance=self.number(table, "imbalance", where, 100.0, lambda v: v >= 1, " >= 1"),
            profile=self.string(table, "profile", where, "exp", PROFILES),
            seed=self.integer(table, "seed", where, minimum=0, default=0),
            n_max=self.integer(table, "n_max", where, minimum=1),
        )

    def subsets(self, table: dict) -> SubsetSpec:
        where = "[subsets]"
        scheme = self.string(table, "scheme", where, "redraw", RESAMPLING_SCHEMES + SEED_SCHEMES)
        if scheme == "none":
            scheme = "seeds"
        count = self.integer(table, "count", where, minimum=2, required=scheme != "seeds")
        fraction = self.number(table, "fraction", where, None, lambda v: 0 < v <= 1, " in (0, 1]")
        if fraction is not None and scheme != "subsample":
            self.fail(where, f"fraction applies to scheme 'subsample' only (scheme is {scheme!r})")
        if scheme == "subsample" and fraction is None:
            self.fail(where, "scheme 'subsample' needs fraction (e.g. fraction = 0.5)")
        seed = self.integer(table, "seed", where, minimum=0, default=0)
        return SubsetSpec(scheme, count, seed, fraction)

    def train(self, table: dict, where: str, base: dict) -> dict:
        merged = dict(base)
        checks = {
            "epochs": lambda: self.integer(table, "epochs", where, minimum=1),
            "batch_size": lambda: self.integer(table, "batch_size", where, minimum=1),
            "model_width": lambda: self.integer(table, "model_width", where, minimum=1),
            "seed": lambda: self.integer(table, "seed", where, minimum=0),
            "lr": lambda: self.number(table, "lr", where, None, lambda v: v > 0, " > 0"),
            "pack_size": lambda: self.integer(table, "pack_size", where, minimum=1),
            "pack": lambda: self.string(table, "pack", where, None, PACK_MODES),
        }
        for key, check in checks.items():
            if key in table:
                merged[key] = check()
        if "device" in table:
            device = table["device"]
            if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
                self.fail(where, f"device must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
            merged["device"] = device
        if "pin_seed" in table:
            if not isinstance(table["pin_seed"], bool):
                self.fail(where, f"pin_seed must be true or false, got {table['pin_seed']!r}")
            merged["pin_seed"] = table["pin_seed"]
        if "options" in table:
            options = table["options"]
            if not isinstance(options, dict):
                self.fail(where, f"options must be a table of recipe overrides, got {options!r}")
            merged["options"] = {**base.get("options", {}), **_flatten(options)}
        return merged

    def method(self, entry, index: int, defaults: dict, top_seeds, subsets: SubsetSpec) -> MethodSpec:
        where = f"[[methods]] #{index}"
        if not isinstance(entry, dict):
            self.fail(where, f"must be a table, got {entry!r}")
        label = self.string(entry, "name", where, required=True)
        where = f"[[methods]] #{index} ({label!r})"
        self.known(entry, METHOD_KEYS, where)
        if not LABEL_PATTERN.match(label):
            self.fail(where, "name must use letters, digits, '.', '_', '+', '-' (it names files)")
        method = self.string(entry, "method", where, required=True)
        settings = self.train(entry, where, defaults)
        seeds = self.seeds(entry, where) or top_seeds
        base_seed = settings.get("seed", 0)
        if subsets.scheme == "seeds":
            if not seeds:
                if subsets.count is None:
                    self.fail(where, "needs seeds (or [subsets] count) with scheme 'seeds'")
                seeds = tuple(base_seed + d for d in range(subsets.count))
        else:
            if seeds and len(seeds) != subsets.count:
                self.fail(where, f"seeds has {len(seeds)} entries; [subsets] count is {subsets.count}")
            if not seeds:
                pinned = settings.get("pin_seed", False)
                seeds = tuple(base_seed if pinned else base_seed + d for d in range(subsets.count))
        return MethodSpec(
            name=label,
            method=method,
            epochs=settings.get("epochs"),
            batch_size=settings.get("batch_size"),
            lr=settings.get("lr"),
            device=settings.get("device", "auto"),
            model_width=settings.get("model_width"),
            seeds=tuple(seeds),
            options=dict(sorted(settings.get("options", {}).items())),
            pack=settings.get("pack", "auto"),
            pack_size=settings.get("pack_size", 8),
        )

    def registered(self, methods: list[tuple[str, str]]) -> None:
        try:
            from bvkit.methods import list_methods
        except ImportError:
            return
        known = list_methods()
        for label, method in methods:
            if method not in known:
                self.fail(f"[[methods]] {label!r}", f"method {method!r} is not registered (known: {', '.join(known)})")


def _flatten(options: dict, prefix: str = "") -> dict:
    """TOML tables in options become dotted keys: {model_kwargs = {width = 8}} -> model_kwargs.width."""
    flat = {}
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _known_datasets() -> list[str] | None:
    try:
        from bvkit.data import list_datasets
    except ImportError:
        return None
    return list(list_datasets())


def spec_of(study_dir: str | Path) -> StudySpec:
    """The spec a study directory was run with (its ``spec.toml``)."""
    path = Path(study_dir) / "spec.toml"
    if not path.is_file():
        raise BvkitError(f"{study_dir}: not a study directory (no spec.toml)")
    return parse_spec(path.read_text(encoding="utf-8"), source=str(path))
