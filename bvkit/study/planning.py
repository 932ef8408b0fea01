"""Plan a study: its training subsets, one task per (method, subset) run with a
content-addressed id, and the device each run trains on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bvkit.errors import BvkitError
from bvkit.study import store
from bvkit.study.spec import StudySpec, spec_of
from bvkit.train.devices import gpu_count, spread_device, wants_gpu

# Bump when a change to the runner changes what a run computes (invalidates every cached run).
RUN_FORMAT = 1


@dataclass(frozen=True)
class RunTask:
    """One (method, subset) run: everything a worker needs, picklable. ``overrides`` are the
    recipe overrides of the training call (``MethodSpec.overrides``), computed once;
    ``data`` says which long-tailed set the subset indexes."""

    run_id: str
    label: str
    method: str
    subset: int
    seed: int
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The run function's keyword arguments besides ``train_indices`` (also run.json's
        ``settings``)."""
        return {"seed": self.seed, "device": self.device, "overrides": self.overrides, **self.data}


def indices_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def run_id_for(spec: StudySpec, method_config: dict, subset_digest: str, seed: int) -> str:
    """sha256 of what defines the trained model: recipe settings, data, training indices, seed."""
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
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return f"{method_config['method']}-{digest}"


def plan_runs(spec: StudySpec, subsets: list[np.ndarray]) -> list[RunTask]:
    """Every (method, subset) run in dispatch order: subset-major, so early runs cover every method."""
    if len(subsets) < spec.n_subsets:
        raise BvkitError(f"the study needs {spec.n_subsets} training subsets, found {len(subsets)}")
    digests = [indices_digest(s) for s in subsets]
    data = {"imbalance": spec.data.imbalance, "profile": spec.data.profile, "data_root": spec.data.root,
            "n_max": spec.data.n_max}
    tasks = []
    for d in range(spec.n_subsets):
        for method in spec.methods:
            if d >= len(method.seeds):
                continue
            seed = method.seeds[d]
            run_id = run_id_for(spec, method.config(), digests[d], seed)
            tasks.append(RunTask(run_id, method.name, method.method, d, seed, method.device,
                                 method.overrides, data))
    return tasks


def assign_devices(tasks: list[RunTask]) -> list[RunTask]:
    """Spread runs whose device is auto/cuda over the visible GPUs: run i gets cuda:(i % n)."""
    if not any(wants_gpu(t.device) for t in tasks):
        return tasks
    n_gpus = gpu_count()
    return [replace(task, device=spread_device(task.device, i, n_gpus)) for i, task in enumerate(tasks)]


def unique_runs(tasks: list[RunTask]) -> list[RunTask]:
    """Two labels with the same recipe share runs: train each id once."""
    seen, unique = set(), []
    for task in tasks:
        if task.run_id not in seen:
            seen.add(task.run_id)
            unique.append(task)
    return unique


def make_subsets(spec: StudySpec):
    """The long-tailed data and the training indices of every run (into data.pool)."""
    from bvkit.data import make_long_tailed, sample_subsets

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
    return spec, plan_runs(spec, store.load_subsets(subsets_path))
