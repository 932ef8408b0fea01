"""Execute runs: train one run (or one pack of runs) into its run directory, safely.

Each run trains into ``runs/<id>.tmp-<host>-<pid>-<rand>/`` under an ``flock`` on
``runs/<id>.lock`` and is renamed to ``runs/<id>/`` only when complete, so an interrupted study
loses at most the runs in flight, and two processes on one directory never train the same run.

The run function defaults to :func:`train_subset` (``bvkit.train.run.train`` on one subset). For
tests, ``BVKIT_STUDY_RUNNER=module:function`` swaps in another function with the same signature
(a fast fake trainer); ``BVKIT_STUDY_TRACEBACK=1`` prints a failed run's traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from bvkit.errors import BvkitError
from bvkit.study import store

if TYPE_CHECKING:
    from bvkit.study.planning import RunTask

DEFAULT_RUN_FUNCTION = "bvkit.study.execution:train_subset"
RUNNER_ENV = "BVKIT_STUDY_RUNNER"


@dataclass(frozen=True)
class Outcome:
    run_id: str
    label: str
    subset: int
    status: str  # "ran" | "cached" | "failed" | "busy"
    seconds: float = 0.0
    error: str = ""


def train_subset(method: str, dataset: str, out: str | Path, *, train_indices: np.ndarray, seed: int = 0,
                 device: str = "auto", overrides: dict | None = None, imbalance: float = 100.0,
                 profile: str = "exp", data_root: str | None = None, n_max: int | None = None) -> dict:
    """Train ``method`` with the recipe ``overrides`` on the pool images ``train_indices`` of
    ``dataset``; returns metrics.json's content.

    The shot splits stay those of the long-tailed set (its per-class counts); the loss sees the
    subset's own counts.
    """
    from bvkit.train.run import train

    data = replace(_long_tailed(dataset, imbalance, profile, data_root, n_max),
                   train_indices=np.asarray(train_indices, dtype=np.int64))
    result = train(method, data, seed=seed, out=out, device=device, resume=False, progress=False,
                   **(overrides or {}))
    return result.metrics


def train_pack_subsets(method: str, dataset: str, outs: list, *, train_indices: list, seeds: list,
                       device: str = "auto", overrides: dict | None = None, imbalance: float = 100.0,
                       profile: str = "exp", data_root: str | None = None, n_max: int | None = None) -> list[dict]:
    """``train_subset`` for several runs of one method at once, packed; metrics per run."""
    from bvkit.train.packing import PackMember, train_packed

    data = _long_tailed(dataset, imbalance, profile, data_root, n_max)
    members = [PackMember(seed, indices, out) for seed, indices, out in zip(seeds, train_indices, outs)]
    results = train_packed(method, data, members, device=device, progress=False, **(overrides or {}))
    return [result.metrics for result in results]


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
    run_function = run_function or os.environ.get(RUNNER_ENV) or DEFAULT_RUN_FUNCTION
    return execute_pack([task], [train_indices], study_dir, dataset, blocking, not_before,
                        run_function=run_function)[0]


def execute_pack(tasks: list[RunTask], train_indices: list, study_dir: str, dataset: str,
                 blocking: bool = False, not_before: float = 0.0, *,
                 run_function: str | Callable | None = None) -> list[Outcome]:
    """``execute`` for a pack: lock every run, train those not done (and not failed by another
    process this study) together, and publish each run directory. One task with a
    ``run_function`` trains alone through it; otherwise the pack trains packed."""
    root = Path(study_dir)
    outcomes: dict[str, Outcome] = {}
    todo = []
    with contextlib.ExitStack() as stack:
        for task, indices in zip(tasks, train_indices):
            held = stack.enter_context(store.file_lock(store.run_lock_path(root, task.run_id), blocking=blocking))
            outcome = _claim(root, task, held, blocking, not_before)
            if outcome is None:
                todo.append((task, indices))
            else:
                outcomes[task.run_id] = outcome
        if todo:
            for outcome in _train(root, todo, dataset, run_function):
                outcomes[outcome.run_id] = outcome
    return [outcomes[task.run_id] for task in tasks]


def _claim(root: Path, task: RunTask, held: bool, blocking: bool, not_before: float) -> Outcome | None:
    """None when this process should train ``task`` (its lock held), else why not."""
    if not held:
        return Outcome(task.run_id, task.label, task.subset, "busy")
    if store.is_done(root, task.run_id):
        return Outcome(task.run_id, task.label, task.subset, "cached")
    failed = store.failed_path(root, task.run_id)
    if blocking and failed.is_file() and failed.stat().st_mtime >= not_before:
        error = failed.read_text(encoding="utf-8", errors="replace").strip()
        return Outcome(task.run_id, task.label, task.subset, "failed", error=error)
    return None


def _train(root: Path, todo: list, dataset: str, run_function: str | Callable | None) -> list[Outcome]:
    """Train the claimed runs ``todo`` ((task, indices) pairs) into fresh temporary
    directories, then rename each into place; a failure is recorded per run (retried next time)."""
    tmps = []
    for task, _ in todo:
        store.clean_run_leftovers(root, task.run_id)
        tmp = store.temp_name(store.run_dir(root, task.run_id))
        tmp.mkdir(parents=True)
        tmps.append(tmp)
    start = time.perf_counter()
    first = todo[0][0]
    try:
        if len(todo) == 1 and run_function is not None:
            results = [resolve_run_function(run_function)(first.method, dataset, tmps[0],
                                                          train_indices=todo[0][1], **first.kwargs)]
        else:
            common = {k: v for k, v in first.kwargs.items() if k != "seed"}
            results = train_pack_subsets(first.method, dataset, tmps, train_indices=[i for _, i in todo],
                                         seeds=[t.seed for t, _ in todo], **common)
        seconds = (time.perf_counter() - start) / len(todo)
        outcomes = []
        for (task, _), tmp, result in zip(todo, tmps, results):
            _finish_run_dir(tmp, task, result, seconds)
            os.rename(tmp, store.run_dir(root, task.run_id))
            store.failed_path(root, task.run_id).unlink(missing_ok=True)
            outcomes.append(Outcome(task.run_id, task.label, task.subset, "ran", seconds))
        _fsync_dir(root / store.RUNS)
        return outcomes
    except Exception as err:  # a failed run is recorded and retried next time, the study goes on
        line = f"{type(err).__name__}: {err}".replace("\n", " ").strip()
        if os.environ.get("BVKIT_STUDY_TRACEBACK"):
            traceback.print_exc()
        outcomes = []
        for (task, _), tmp in zip(todo, tmps):
            shutil.rmtree(tmp, ignore_errors=True)
            if store.is_done(root, task.run_id):  # published before a later member failed
                outcomes.append(Outcome(task.run_id, task.label, task.subset, "ran"))
                continue
            store.atomic_write_text(store.failed_path(root, task.run_id), line + "\n")
            outcomes.append(Outcome(task.run_id, task.label, task.subset, "failed",
                                    time.perf_counter() - start, line))
        return outcomes


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
