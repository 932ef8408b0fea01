"""Plan a study: its training subsets, one task per (method, subset) run with a
content-addressed id, the device each run trains on, and which runs share a stage one.

Each run's recipe is resolved once (when the spec is read: ``MethodSpec.recipe``) and carried
on its task; the run id is a digest of that resolved recipe, the data, the training indices and
the seed (as joblib derives a cache key from the arguments), so a changed built-in default
changes the id and never silently reuses an old run. Study directories made when ids were a
digest of the spec's hand-listed settings (``legacy_run_id``) keep their runs: a planned run
whose content id has no directory there takes its old id when that one has.

Stage-one sharing: a run whose recipe has second stages (cRT, tau-norm, LWS, RIDE's routers)
reuses the stage one of another run of the same subset and seed whose stage-one recipe (the
recipe less its name, description and second stages, after overrides) is the same content:
a plain method (``ce`` for ``crt``, ``ride`` at 3 experts for ``ride-ea`` at 3) if the study has
one, else the first such two-stage method, which trains its own stage one for the others. Each
backbone is thus trained once per subset, and every run stays a method of the spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bvkit.data.subsets import load_subsets
from bvkit.errors import BvkitError
from bvkit.methods import Recipe
from bvkit.plugins import plugin_digest
from bvkit.study.spec import MethodSpec, StudySpec, spec_of
from bvkit.study.store import RUNS, TMP_MARK
from bvkit.train.devices import gpu_count, spread_device, wants_gpu


@dataclass(frozen=True)
class RunTask:
    """One (method, subset) run: everything a worker needs, picklable. ``overrides`` are the
    recipe overrides of the training call (``MethodSpec.overrides``), computed once;
    ``recipe``: the run's recipe, resolved once from them (what it trains);
    ``data`` says which long-tailed set the subset indexes. ``stage_one``: the run whose
    stage one this run reuses (None: it trains its own); ``keeps_stage_one``: a later stage
    reuses this run's stage one, so its run directory keeps those weights."""

    run_id: str
    label: str
    method: str
    subset: int
    seed: int
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    recipe: Recipe | None = None
    data: dict[str, Any] = field(default_factory=dict)
    stage_one: RunTask | None = None
    keeps_stage_one: bool = False
    plugins: tuple[str, ...] = ()  # the study's plugin modules: every worker imports them first
    tensorboard: bool = False  # write epoch scalars for TensorBoard (not part of the run id)
    compile: str = "auto"  # the training forward through torch.compile (not part of the run id)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The run function's keyword arguments besides ``train_indices`` (run.json's
        ``settings``, the recipe aside): the resolved ``recipe`` beside the ``overrides`` it
        was resolved with; ``tensorboard``, ``compile`` and ``data_seed`` only when set, so a
        run function written without them still fits."""
        return {"seed": self.seed, "device": self.device, "overrides": self.overrides, "recipe": self.recipe,
                **self.data,
                **({"tensorboard": True} if self.tensorboard else {}),
                **({"compile": self.compile} if self.compile != "auto" else {})}


def indices_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def stage_one_recipe(recipe: Recipe) -> dict:
    """What a recipe's stage one trains: every field but its name, description and second stages."""
    content = recipe.to_dict()
    for key in ("name", "description", "stages"):
        del content[key]
    return content


def digest_of(content: Any) -> str:
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_id_for(spec: StudySpec, recipe: Recipe, subset_digest: str, seed: int) -> str:
    """``<method>-<16 hex>``: a digest of what defines the trained model, nothing listed by
    hand: the resolved recipe's content (its description aside; a two-stage recipe's stage one
    is part of it), the long-tailed data, the training indices, the model seed, the bvkit
    version and the plugins' source (device, packing and logging are not part of it)."""
    from bvkit import __version__

    content = {
        "bvkit": __version__,
        "recipe": {key: value for key, value in recipe.to_dict().items() if key != "description"},
        "data": _data_content(spec),
        "train_indices": subset_digest,
        "seed": seed,
    }
    if spec.plugins:  # a plugin's source is part of what defines the model
        content["plugins"] = plugin_digest(spec.plugins, [spec.folder])
    return f"{recipe.name}-{digest_of(content)[:16]}"


def _data_content(spec: StudySpec) -> dict:
    return {"dataset": spec.data.dataset, "imbalance": spec.data.imbalance, "profile": spec.data.profile,
            "n_max": spec.data.n_max, "seed": spec.data.seed}


# Recipe fields added since run format 1, with the value every format-1 run had: a run using
# another value is never taken for a format-1 one, and the format-1 stage-one digest leaves them out.
ADDED_SINCE_FORMAT_1 = {"schedule_scaling": "proportional"}


def legacy_run_id(spec: StudySpec, method: MethodSpec, subset_digest: str, seed: int) -> str:
    """The id the run had before ids were derived from the resolved recipe (run format 1: a
    digest of the spec's own settings, listed by hand, with the stage-one recipe's digest for a
    two-stage method); recognised in the study directories made then, never made now."""
    from bvkit import __version__

    settings = {"method": method.method, "epochs": method.epochs, "batch_size": method.batch_size, "lr": method.lr,
                "model_width": method.model_width, "options": method.options,
                **({"precision": method.precision} if method.precision != "auto" else {}),
                **{key: getattr(method.recipe, key) for key, then in ADDED_SINCE_FORMAT_1.items()
                   if getattr(method.recipe, key) != then}}
    data = {key: value for key, value in _data_content(spec).items() if key != "seed"}
    content = {"format": 1, "bvkit": __version__, "method": settings, "data": data,
               "train_indices": subset_digest, "seed": seed}
    if method.recipe.stages:  # the stage-one recipe as format 1 saw it: without the fields added since
        stage_one = stage_one_recipe(method.recipe)
        content["stage_one"] = digest_of({key: value for key, value in stage_one.items()
                                          if ADDED_SINCE_FORMAT_1.get(key, object()) != value})
    if spec.plugins:
        content["plugins"] = plugin_digest(spec.plugins, [spec.folder])
    return f"{method.method}-{digest_of(content)[:16]}"


def plan_runs(spec: StudySpec, subsets: list[np.ndarray], study_dir: str | Path | None = None) -> list[RunTask]:
    """Every (method, subset) run in dispatch order: subset-major, so early runs cover every
    method, and within a subset the runs that reuse a stage one after the others. With
    ``study_dir``, a run that directory holds under its legacy id keeps that id."""
    if len(subsets) < spec.n_subsets:
        raise BvkitError(f"the study needs {spec.n_subsets} training subsets, found {len(subsets)}")
    digests = [indices_digest(s) for s in subsets]
    data = {"imbalance": spec.data.imbalance, "profile": spec.data.profile, "data_root": spec.data.root,
            "n_max": spec.data.n_max, **({"data_seed": spec.data.seed} if spec.data.seed else {})}
    recipes = {m.name: m.recipe for m in spec.methods}
    stage_ones = {name: digest_of(stage_one_recipe(recipe)) for name, recipe in recipes.items()}
    held = _held_run_ids(study_dir)
    tasks = []
    for d in range(spec.n_subsets):
        row = []
        for method in spec.methods:
            if d >= len(method.seeds):
                continue
            seed = method.seeds[d]
            run_id = run_id_for(spec, method.recipe, digests[d], seed)
            if held and run_id not in held:
                legacy = legacy_run_id(spec, method, digests[d], seed)
                run_id = legacy if legacy in held else run_id
            row.append(RunTask(run_id, method.name, method.method, d, seed, method.device, method.overrides,
                               method.recipe, data, plugins=spec.plugins, tensorboard=method.tensorboard,
                               compile=method.compile))
        tasks.extend(share_stage_ones(row, recipes, stage_ones))
    return tasks


def _held_run_ids(study_dir: str | Path | None) -> set[str]:
    """The run ids a study directory holds: finished runs and runs interrupted in flight."""
    if study_dir is None or not (Path(study_dir) / RUNS).is_dir():
        return set()
    return {entry.name.split(TMP_MARK)[0] for entry in (Path(study_dir) / RUNS).iterdir()
            if entry.is_dir()}


def share_stage_ones(row: list[RunTask], recipes: dict[str, Recipe], stage_ones: dict[str, str]) -> list[RunTask]:
    """One subset's runs with each two-stage run pointed at the run that trains its stage one
    (same seed, same stage-one recipe): a plain run if there is one, else the first two-stage
    run. Providers and runs of their own first, then the runs that reuse a stage one."""
    groups: dict[tuple, list[RunTask]] = {}
    for task in row:
        groups.setdefault((task.seed, stage_ones[task.label]), []).append(task)
    providers = {}
    for key, members in groups.items():
        plain = [t for t in members if not recipes[t.label].stages]
        provider = (plain or members)[0]
        if any(recipes[t.label].stages and t.run_id != provider.run_id for t in members):
            providers[key] = replace(provider, keeps_stage_one=True)
    own, reusing = [], []
    for task in row:
        provider = providers.get((task.seed, stage_ones[task.label]))
        if provider is None or not recipes[task.label].stages or task.run_id == provider.run_id:
            own.append(replace(task, keeps_stage_one=provider is not None and task.run_id == provider.run_id))
        else:
            reusing.append(replace(task, stage_one=provider))
    return own + reusing


def assign_devices(tasks: list[RunTask]) -> list[RunTask]:
    """Spread runs whose device is auto/cuda over the visible GPUs: run i gets cuda:(i % n); a
    run's ``stage_one`` is the task of that run, device included."""
    if not any(wants_gpu(t.device) for t in tasks):
        return tasks
    n_gpus = gpu_count()
    spread = [replace(task, device=spread_device(task.device, i, n_gpus)) for i, task in enumerate(tasks)]
    by_id = {task.run_id: task for task in spread}
    return [replace(task, stage_one=by_id.get(task.stage_one.run_id, task.stage_one)) if task.stage_one else task
            for task in spread]


def unique_runs(tasks: list[RunTask]) -> list[RunTask]:
    """Two labels with the same recipe share runs: train each id once."""
    seen, unique = set(), []
    for task in tasks:
        if task.run_id not in seen:
            seen.add(task.run_id)
            unique.append(task)
    return unique


def make_subsets(spec: StudySpec, data=None):
    """The long-tailed data (``data``, else loaded as the spec says) and the training indices
    of every run (into data.pool)."""
    from bvkit.data import make_long_tailed, sample_subsets

    if data is None:
        extra = {"n_max": spec.data.n_max} if spec.data.n_max is not None else {}
        data = make_long_tailed(spec.data.dataset, imbalance=spec.data.imbalance, profile=spec.data.profile,
                                seed=spec.data.seed, root=spec.data.root, **extra)
    if spec.subsets.scheme == "seeds":
        subsets = [np.asarray(data.train_indices, dtype=np.int64)] * spec.n_subsets
    else:
        extra = {"fraction": spec.subsets.fraction} if spec.subsets.scheme == "subsample" else {}
        subsets = sample_subsets(spec.subsets.scheme, data, n_subsets=spec.subsets.count,
                                 seed=spec.subsets.seed, **extra)
    return data, [np.asarray(s, dtype=np.int64) for s in subsets]


def planned_runs(study_dir: str | Path) -> tuple[StudySpec, list[RunTask]]:
    """The runs of a study directory, from its spec.toml and subsets.npz (no data loaded)."""
    study_dir = Path(study_dir)
    spec = spec_of(study_dir)
    subsets_path = study_dir / "subsets.npz"
    if not subsets_path.is_file():
        raise BvkitError(f"{study_dir}: no subsets.npz (run `bvkit study run` first)")
    return spec, plan_runs(spec, load_subsets(subsets_path), study_dir)
