"""Run a study: plan (method, subset) runs with content-addressed ids, train what is missing, gather.

Safety on one directory: each run trains into ``runs/<id>.tmp-<host>-<pid>-<rand>/`` under an
``flock`` on ``runs/<id>.lock`` and is renamed to ``runs/<id>/`` only when complete, so an
interrupted study loses at most the runs in flight and the same command resumes it; two
processes on one directory share the runs (a process skips a run another one holds, then waits
for it at the end) and never train the same run twice.

The run function defaults to :func:`train_subset` (``bvkit.train.train`` on one subset). For
tests, ``BVKIT_STUDY_RUNNER=module:function`` swaps in another function with the same signature
(a fast fake trainer); ``BVKIT_STUDY_TRACEBACK=1`` prints a failed run's traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bvkit.errors import BvkitError
from bvkit.study import store
from bvkit.study.backends import check_backend, dispatch
from bvkit.study.spec import StudySpec, load_spec, parse_spec, spec_of

DEFAULT_RUN_FUNCTION = "bvkit.study.runner:train_subset"
RUNNER_ENV = "BVKIT_STUDY_RUNNER"
# Bump when a change to the runner changes what a run computes (invalidates every cached run).
RUN_FORMAT = 1


@dataclass(frozen=True)
class RunTask:
    """One (method, subset) run: everything a worker needs, picklable."""

    run_id: str
    label: str
    method: str
    subset: int
    seed: int
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    run_id: str
    label: str
    subset: int
    status: str  # "ran" | "cached" | "failed" | "busy"
    seconds: float = 0.0
    error: str = ""


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
    tasks = []
    for d in range(spec.n_subsets):
        for method in spec.methods:
            if d >= len(method.seeds):
                continue
            seed = method.seeds[d]
            kwargs = dict(
                imbalance=spec.data.imbalance,
                profile=spec.data.profile,
                seed=seed,
                epochs=method.epochs,
                batch_size=method.batch_size,
                lr=method.lr,
                device=method.device,
                data_root=spec.data.root,
                model_width=method.model_width,
                overrides=dict(method.options) or None,
            )
            if spec.data.n_max is not None:
                kwargs["n_max"] = spec.data.n_max
            run_id = run_id_for(spec, method.config(), digests[d], seed)
            tasks.append(RunTask(run_id, method.name, method.method, d, seed, kwargs))
    return tasks


def assign_devices(tasks: list[RunTask]) -> list[RunTask]:
    """Spread runs whose device is auto/cuda over the visible GPUs: run i gets cuda:(i % n)."""
    if not any(t.kwargs.get("device") in ("auto", "cuda") for t in tasks):
        return tasks
    n_gpus = _gpu_count()
    if n_gpus == 0:
        return tasks
    spread = []
    for i, task in enumerate(tasks):
        if task.kwargs.get("device") in ("auto", "cuda"):
            task = RunTask(task.run_id, task.label, task.method, task.subset, task.seed,
                           {**task.kwargs, "device": f"cuda:{i % n_gpus}"})
        spread.append(task)
    return spread


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def train_subset(method: str, dataset: str, out: str | Path, *, train_indices: np.ndarray,
                 imbalance: float = 100.0, profile: str = "exp", seed: int = 0, epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None, device: str = "auto",
                 data_root: str | None = None, model_width: int | None = None,
                 overrides: dict | None = None, n_max: int | None = None) -> dict:
    """Train ``method`` on the pool images ``train_indices`` of ``dataset``; returns metrics.json's content.

    The shot splits stay those of the long-tailed set (its per-class counts); the loss sees the
    subset's own counts.
    """
    from dataclasses import replace

    from bvkit.train import train

    data = _long_tailed(dataset, imbalance, profile, data_root, n_max)
    data = replace(data, train_indices=np.asarray(train_indices, dtype=np.int64))
    settings = dict(overrides or {})
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr),
                       ("model_kwargs.width", model_width)):
        if value is not None:
            settings[key] = value
    result = train(method, data, seed=seed, out=out, device=device, resume=False, progress=False, **settings)
    return result.metrics


@lru_cache(maxsize=1)
def _long_tailed(dataset, imbalance, profile, root, n_max):
    """The dataset, loaded once per worker process: consecutive runs of a study share it."""
    from bvkit.data import make_long_tailed

    return make_long_tailed(dataset, imbalance=imbalance, profile=profile, root=root,
                            **({"n_max": n_max} if n_max is not None else {}))


def resolve_run_function(ref: str | Callable | None = None) -> Callable:
    if callable(ref):
        return ref
    ref = ref or os.environ.get(RUNNER_ENV) or DEFAULT_RUN_FUNCTION
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise BvkitError(f"run function {ref!r} must be written module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BvkitError(f"cannot import run function module {module_name!r}: {err}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BvkitError(f"module {module_name!r} has no run function {attr!r}") from None


def execute(task: RunTask, train_indices: np.ndarray, study_dir: str, run_function: str | Callable | None,
            dataset: str, blocking: bool = False, not_before: float = 0.0) -> Outcome:
    """Train one run unless it is done or another process holds it (then report "busy").

    ``blocking`` waits for the holder instead; a failure it recorded after ``not_before``
    (this study's start) is reported, not retried, so two processes never repeat a run.
    """
    root = Path(study_dir)
    with store.file_lock(store.run_lock_path(root, task.run_id), blocking=blocking) as held:
        if not held:
            return Outcome(task.run_id, task.label, task.subset, "busy")
        if store.is_done(root, task.run_id):
            return Outcome(task.run_id, task.label, task.subset, "cached")
        failed = store.failed_path(root, task.run_id)
        if blocking and failed.is_file() and failed.stat().st_mtime >= not_before:
            error = failed.read_text(encoding="utf-8", errors="replace").strip()
            return Outcome(task.run_id, task.label, task.subset, "failed", error=error)
        store.clean_run_leftovers(root, task.run_id)
        final = store.run_dir(root, task.run_id)
        tmp = store.temp_name(final)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            train = resolve_run_function(run_function)
            result = train(task.method, dataset, tmp, train_indices=train_indices, **task.kwargs)
            seconds = time.perf_counter() - start
            _finish_run_dir(tmp, task, result, seconds)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except Exception as err:  # a failed run is recorded and retried next time, the study goes on
            shutil.rmtree(tmp, ignore_errors=True)
            line = f"{type(err).__name__}: {err}".replace("\n", " ").strip()
            store.atomic_write_text(failed, line + "\n")
            if os.environ.get("BVKIT_STUDY_TRACEBACK"):
                traceback.print_exc()
            return Outcome(task.run_id, task.label, task.subset, "failed", time.perf_counter() - start, line)
        failed.unlink(missing_ok=True)
        return Outcome(task.run_id, task.label, task.subset, "ran", seconds)


def _finish_run_dir(tmp: Path, task: RunTask, result: Any, seconds: float) -> None:
    if not (tmp / "predictions.npz").is_file():
        raise BvkitError("the run function wrote no predictions.npz")
    if not (tmp / "metrics.json").is_file():
        if not isinstance(result, dict):
            raise BvkitError("the run function wrote no metrics.json and returned no metrics dict")
        store.atomic_write_text(tmp / "metrics.json", json.dumps(result, indent=2, default=_jsonable))
    info = {
        "run_id": task.run_id,
        "method": task.label,
        "recipe": task.method,
        "subset": task.subset,
        "seed": task.seed,
        "seconds": seconds,
        "host": socket.gethostname(),
        "settings": task.kwargs,
    }
    store.atomic_write_text(tmp / "run.json", json.dumps(info, indent=2, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def prepare(spec: StudySpec, study_dir: Path) -> tuple[Any, list[np.ndarray], list[RunTask]]:
    """Write spec.toml and subsets.npz, clean leftovers; returns (data, subsets, planned runs)."""
    data, subsets = make_subsets(spec)
    with store.study_lock(study_dir):
        (study_dir / store.RUNS).mkdir(exist_ok=True)
        store.clean_leftovers(study_dir)
        store.write_if_changed(study_dir / "spec.toml", spec.text.encode("utf-8"))
        store.save_subsets(study_dir / "subsets.npz", subsets)
    return data, subsets, plan_runs(spec, subsets)


def run_study(spec: StudySpec | str | Path, out: str | Path, *, jobs: int = 1, backend: str = "loky",
              scheduler: str | None = None, run_function: str | Callable | None = None,
              log: Callable[[str], None] | None = print, pack: str | None = None,
              pack_size: int | None = None) -> dict:
    """Train every missing run of ``spec`` into ``out`` and gather; returns counts per outcome.

    ``pack`` (auto / always / never; default: each method's spec setting) trains the runs of one
    method that differ only by subset and seed ``pack_size`` at a time as one packed network
    (``bvkit.train.packed``; same results, faster on a GPU). ``auto`` packs on CUDA only: on
    CPU packing is slower per model. Only the default run function packs.
    """
    from bvkit.study.results import gather

    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    if jobs < 1:
        raise BvkitError(f"--jobs must be >= 1, got {jobs}")
    check_backend(backend, scheduler)
    study_dir = Path(out)
    log = log or (lambda message: None)
    if run_function is None and os.environ.get(RUNNER_ENV):
        log(f"using run function {os.environ[RUNNER_ENV]} from {RUNNER_ENV} (a testing hook)")
    if run_function is None:  # resolved here: remote workers may not share this environment
        run_function = os.environ.get(RUNNER_ENV) or DEFAULT_RUN_FUNCTION
    if isinstance(run_function, str):
        resolve_run_function(run_function)  # fail early on a bad reference
    started = time.time()
    data, subsets, planned = prepare(spec, study_dir)
    tasks = assign_devices(_unique(planned))
    todo = [t for t in tasks if not store.is_done(study_dir, t.run_id)]
    log(f"{spec.name}: {len(tasks)} runs, {len(tasks) - len(todo)} cached, {len(todo)} to train "
        f"({jobs} job{'s' if jobs > 1 else ''}, {backend})")
    if pack is not None and pack not in PACK_MODES:
        raise BvkitError(f"--pack must be one of {', '.join(PACK_MODES)}, got {pack!r}")
    if pack_size is not None and pack_size < 1:
        raise BvkitError(f"--pack-size must be >= 1, got {pack_size}")
    packs = (group_packs(spec, todo, pack, pack_size) if run_function == DEFAULT_RUN_FUNCTION
             else [[t] for t in todo])
    if any(len(group) > 1 for group in packs):
        log(f"packing: {len(todo)} runs in {len(packs)} packs")
    outcomes = {}
    for blocking in (False, True):
        busy = {t.run_id for t in todo if outcomes.get(t.run_id, Outcome("", "", 0, "busy")).status == "busy"}
        groups = [[t for t in group if t.run_id in busy] for group in packs]
        groups = [group for group in groups if group]
        if not groups:
            break
        calls = [(execute, (g[0], subsets[g[0].subset], str(study_dir), run_function, spec.data.dataset, blocking,
                            started)) if len(g) == 1 else
                 (execute_pack, (g, [subsets[t.subset] for t in g], str(study_dir), spec.data.dataset, blocking,
                                 started))
                 for g in groups]
        for result in dispatch(calls, jobs=jobs, backend=backend, scheduler=scheduler):
            for outcome in (result if isinstance(result, list) else [result]):
                outcomes[outcome.run_id] = outcome
                if outcome.status != "busy":
                    _log_outcome(log, outcome, len([o for o in outcomes.values() if o.status != "busy"]), len(todo))
    gather(study_dir, spec, planned, train_counts=data.counts, labels=data.test.labels,
           class_names=data.class_names)
    counts = {"cached": len(tasks) - len(todo), "ran": 0, "failed": 0}
    for outcome in outcomes.values():
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    log(f"{spec.name}: {counts['ran']} trained, {counts['cached']} cached, {counts['failed']} failed; "
        f"results in {study_dir}")
    return counts


PACK_MODES = ("auto", "always", "never")


def packs_on(mode: str, device: str) -> bool:
    """Whether ``mode`` packs runs on ``device``: auto = on CUDA only (on CPU a packed model
    trains slower per model than one alone; see experiments/results/bench_train_cpu.txt)."""
    if mode == "never":
        return False
    if mode == "always":
        return True
    return str(device).startswith("cuda") or (device == "auto" and _gpu_count() > 0)


def group_packs(spec: StudySpec, tasks: list[RunTask], pack: str | None = None,
                pack_size: int | None = None) -> list[list[RunTask]]:
    """``tasks`` in packs: runs of one method label with the same settings but for the seed,
    on one device, up to ``pack_size`` a pack; unpackable methods (second stages, a teacher)
    and methods not packing on their device stay alone. Pack order follows ``tasks``."""
    from bvkit.methods import create_method

    groups: dict[tuple, list[RunTask]] = {}
    order: list[tuple] = []
    for i, task in enumerate(tasks):
        method = spec.method(task.label)
        mode = pack or method.pack
        size = pack_size or method.pack_size
        key: tuple = ("alone", i)
        if size > 1 and packs_on(mode, task.kwargs.get("device", "auto")) and _packable(task, create_method):
            settings = {k: v for k, v in task.kwargs.items() if k != "seed"}
            key = ("pack", task.label, json.dumps(settings, sort_keys=True, default=str))
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append(task)
    packs = []
    for key in order:
        members = groups[key]
        size = (pack_size or spec.method(members[0].label).pack_size) if key[0] == "pack" else 1
        packs.extend(members[i:i + size] for i in range(0, len(members), size))
    return packs


def _packable(task: RunTask, create_method) -> bool:
    from bvkit.train.packed import packable

    try:
        return packable(create_method(task.method, **_recipe_settings(task.kwargs)))
    except BvkitError:
        return False


def _recipe_settings(kwargs: dict) -> dict:
    settings = dict(kwargs.get("overrides") or {})
    for key, name in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"),
                      ("model_width", "model_kwargs.width")):
        if kwargs.get(key) is not None:
            settings[name] = kwargs[key]
    return settings


def train_pack_subsets(method: str, dataset: str, outs: list, *, train_indices: list, seeds: list,
                       imbalance: float = 100.0, profile: str = "exp", device: str = "auto",
                       data_root: str | None = None, n_max: int | None = None, **kwargs) -> list[dict]:
    """``train_subset`` for several runs of one method at once, packed; metrics per run."""
    from bvkit.train.packed import PackMember, train_packed

    data = _long_tailed(dataset, imbalance, profile, data_root, n_max)
    members = [PackMember(seed, indices, out) for seed, indices, out in zip(seeds, train_indices, outs)]
    results = train_packed(method, data, members, device=device, progress=False, **_recipe_settings(kwargs))
    return [result.metrics for result in results]


def execute_pack(tasks: list[RunTask], train_indices: list, study_dir: str, dataset: str,
                 blocking: bool = False, not_before: float = 0.0) -> list[Outcome]:
    """``execute`` for a pack: lock every run, train those not done (and not failed by another
    process this study) together, and publish each run directory as ``execute`` does."""
    import contextlib

    root = Path(study_dir)
    outcomes, todo = [], []
    with contextlib.ExitStack() as stack:
        for task, indices in zip(tasks, train_indices):
            held = stack.enter_context(store.file_lock(store.run_lock_path(root, task.run_id), blocking=blocking))
            failed = store.failed_path(root, task.run_id)
            if not held:
                outcomes.append(Outcome(task.run_id, task.label, task.subset, "busy"))
            elif store.is_done(root, task.run_id):
                outcomes.append(Outcome(task.run_id, task.label, task.subset, "cached"))
            elif blocking and failed.is_file() and failed.stat().st_mtime >= not_before:
                error = failed.read_text(encoding="utf-8", errors="replace").strip()
                outcomes.append(Outcome(task.run_id, task.label, task.subset, "failed", error=error))
            else:
                todo.append((task, indices))
        if not todo:
            return outcomes
        tmps = []
        for task, _ in todo:
            store.clean_run_leftovers(root, task.run_id)
            tmp = store.temp_name(store.run_dir(root, task.run_id))
            tmp.mkdir(parents=True)
            tmps.append(tmp)
        start = time.perf_counter()
        first = todo[0][0]
        common = {k: v for k, v in first.kwargs.items() if k != "seed"}
        try:
            results = train_pack_subsets(first.method, dataset, tmps, train_indices=[i for _, i in todo],
                                         seeds=[t.seed for t, _ in todo], **common)
            seconds = time.perf_counter() - start
            for (task, _), tmp, result in zip(todo, tmps, results):
                _finish_run_dir(tmp, task, result, seconds / len(todo))
                os.rename(tmp, store.run_dir(root, task.run_id))
                store.failed_path(root, task.run_id).unlink(missing_ok=True)
                outcomes.append(Outcome(task.run_id, task.label, task.subset, "ran", seconds / len(todo)))
            _fsync_dir(root / store.RUNS)
        except Exception as err:  # the whole pack failed: recorded per run, retried next time
            line = f"{type(err).__name__}: {err}".replace("\n", " ").strip()
            if os.environ.get("BVKIT_STUDY_TRACEBACK"):
                traceback.print_exc()
            for (task, _), tmp in zip(todo, tmps):
                shutil.rmtree(tmp, ignore_errors=True)
                if not store.is_done(root, task.run_id):
                    store.atomic_write_text(store.failed_path(root, task.run_id), line + "\n")
                    outcomes.append(Outcome(task.run_id, task.label, task.subset, "failed",
                                            time.perf_counter() - start, line))
                else:
                    outcomes.append(Outcome(task.run_id, task.label, task.subset, "ran"))
    return outcomes


def _unique(tasks: list[RunTask]) -> list[RunTask]:
    """Two labels with the same recipe share runs: train each id once."""
    seen, unique = set(), []
    for task in tasks:
        if task.run_id not in seen:
            seen.add(task.run_id)
            unique.append(task)
    return unique


def _log_outcome(log, outcome: Outcome, done: int, total: int) -> None:
    what = {"ran": f"trained in {outcome.seconds:.1f} s", "cached": "done by another process",
            "failed": f"FAILED: {outcome.error}"}[outcome.status]
    log(f"[{done}/{total}] {outcome.label} subset {outcome.subset}: {what}")


def planned_runs(study_dir: str | Path) -> tuple[StudySpec, list[RunTask]]:
    """The runs of a study directory, from its spec.toml and subsets.npz (no data loaded)."""
    study_dir = Path(study_dir)
    spec = spec_of(study_dir)
    subsets_path = study_dir / "subsets.npz"
    if not subsets_path.is_file():
        raise BvkitError(f"{study_dir}: no subsets.npz (run `bvkit study run` first)")
    return spec, plan_runs(spec, store.load_subsets(subsets_path))
