"""Plan a study: its training subsets, one task per (method, subset) run with a
content-addressed id, the device each run trains on, and which runs share a stage one.

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
from bvkit.methods import Recipe, create_method
from bvkit.plugins import plugin_digest
from bvkit.study.spec import StudySpec, spec_of
from bvkit.train.devices import gpu_count, spread_device, wants_gpu

# Bump when a change to the runner changes what a run computes (invalidates every cached run).
RUN_FORMAT = 1


@dataclass(frozen=True)
class RunTask:
    """One (method, subset) run: everything a worker needs, picklable. ``overrides`` are the
    recipe overrides of the training call (``MethodSpec.overrides``), computed once;
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
    data: dict[str, Any] = field(default_factory=dict)
    stage_one: RunTask | None = None
    keeps_stage_one: bool = False
    plugins: tuple[str, ...] = ()  # the study's plugin modules: every worker imports them first
    tensorboard: bool = False  # write epoch scalars for TensorBoard (not part of the run id)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The run function's keyword arguments besides ``train_indices`` (also run.json's
        ``settings``); ``tensorboard`` only when asked for, so a run function written
        without it still fits."""
        return {"seed": self.seed, "device": self.device, "overrides": self.overrides, **self.data,
                **({"tensorboard": True} if self.tensorboard else {})}


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


def run_id_for(spec: StudySpec, method_config: dict, subset_digest: str, seed: int,
               stage_one: str | None = None) -> str:
    """sha256 of what defines the trained model: recipe settings, data, training indices, seed,
    and for a two-stage recipe the digest of its stage-one recipe (``stage_one``)."""
    from bvkit import __version__

    content = {
        "format": RUN_FORMAT,
        "bvkit": __version__,
        "method": method_config,
        "data": {"dataset": spec.data.dataset, "imbalance": spec.data.imbalance, "profile": spec.data.profile,
                 "n_max": spec.data.n_max},
        "train_indices": subset_digest,
        "seed": seed,
    }
    if stage_one is not None:
        content["stage_one"] = stage_one
    if spec.plugins:  # a plugin's source is part of what defines the model
        content["plugins"] = plugin_digest(spec.plugins, [spec.folder])
    return f"{method_config['method']}-{digest_of(content)[:16]}"


def plan_runs(spec: StudySpec, subsets: list[np.ndarray]) -> list[RunTask]:
    """Every (method, subset) run in dispatch order: subset-major, so early runs cover every
    method, and within a subset the runs that reuse a stage one after the others."""
    if len(subsets) < spec.n_subsets:
        raise BvkitError(f"the study needs {spec.n_subsets} training subsets, found {len(subsets)}")
    digests = [indices_digest(s) for s in subsets]
    data = {"imbalance": spec.data.imbalance, "profile": spec.data.profile, "data_root": spec.data.root,
            "n_max": spec.data.n_max}
    recipes = {m.name: create_method(m.method, dataset=spec.data.dataset, **m.overrides) for m in spec.methods}
    stage_ones = {name: digest_of(stage_one_recipe(recipe)) for name, recipe in recipes.items()}
    tasks = []
    for d in range(spec.n_subsets):
        row = []
        for method in spec.methods:
            if d >= len(method.seeds):
                continue
            seed = method.seeds[d]
            two_stage = bool(recipes[method.name].stages)
            run_id = run_id_for(spec, method.config(), digests[d], seed,
                                stage_ones[method.name] if two_stage else None)
            row.append(RunTask(run_id, method.name, method.method, d, seed, method.device, method.overrides, data,
                               plugins=spec.plugins, tensorboard=method.tensorboard))
        tasks.extend(share_stage_ones(row, recipes, stage_ones))
    return tasks


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
    return spec, plan_runs(spec, load_subsets(subsets_path))
