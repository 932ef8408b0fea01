"""Execute runs: train one run (or one pack of runs) into its run directory, safely.

Each run trains into ``runs/<id>.tmp-<host>-<pid>-<rand>/`` under an ``flock`` on
``runs/<id>.lock`` and is renamed to ``runs/<id>/`` only when complete, so an interrupted study
loses nothing finished, and two processes on one directory never train the same run. A run
interrupted in flight leaves its temporary directory with the checkpoint of its last epoch; the
next process that claims the run takes that directory over and resumes from it (the default run
function, and each run of a pack), so it loses at most the epoch in progress.

A run that reuses another's stage one (``RunTask.stage_one``) starts from that run's checkpoint:
the other run is trained first if nobody has (under its own lock, so a backbone is never
trained twice), waited for if another process holds it. Each finished run keeps its
checkpoint only when a later stage reuses its stage one, as those weights alone.

The run function (:func:`select_run_function`, the one place that picks it) defaults to
:func:`train_subset` (``bvkit.train.run.train`` on one subset). For tests,
``BVKIT_STUDY_RUNNER=module:function`` swaps in another function with the same signature (a
fast fake trainer); ``BVKIT_STUDY_TRACEBACK=1`` prints a failed run's traceback.
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

from bvkit.atomic import atomic_write_text, fsync_directory
from bvkit.errors import BvkitError
from bvkit.plugins import load_plugins
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
                 device: str = "auto", overrides: dict | None = None, recipe=None, imbalance: float = 100.0,
                 profile: str = "exp", data_root: str | None = None, n_max: int | None = None, data_seed: int = 0,
                 stage_one: str | None = None, keep_stage_one: bool = False, tensorboard: bool = False,
                 compile: str = "auto") -> dict:
    """Train ``recipe`` (the run's resolved recipe: ``method`` with the ``overrides``, resolved
    once when the study was planned; without it, resolved here) on the pool images
    ``train_indices`` of ``dataset``'s long-tailed set (drawn with ``data_seed``); returns
    metrics.json's content. ``stage_one``: a checkpoint to take stage one
    from (``bvkit.train.run.train``'s); ``keep_stage_one``: keep the stage-one weights as
    ``out/checkpoint.pt`` (a later stage reuses them), else no checkpoint is kept;
    ``tensorboard``: epoch scalars in ``out/tensorboard`` (``bvkit.train.tensorboard``);
    ``compile``: ``bvkit.train.compiling``'s mode.

    The shot splits stay those of the long-tailed set (its per-class counts); the loss sees the
    subset's own counts. A checkpoint already in ``out`` (a run interrupted in flight) is
    resumed.
    """
    from bvkit.train.run import train

    data = replace(_long_tailed(dataset, imbalance, profile, data_root, n_max, data_seed),
                   train_indices=np.asarray(train_indices, dtype=np.int64))
    target, extra = _resolved(method, recipe, overrides)
    result = train(target, data, seed=seed, out=out, device=device, stage_one=stage_one, resume=True,
                   progress=False, tensorboard=tensorboard, compile=compile, **extra)
    _keep_checkpoint(Path(out), keep_stage_one)
    return result.metrics


def train_pack_subsets(method: str, dataset: str, outs: list, *, train_indices: list, seeds: list,
                       device: str = "auto", overrides: dict | None = None, recipe=None, imbalance: float = 100.0,
                       profile: str = "exp", data_root: str | None = None, n_max: int | None = None,
                       data_seed: int = 0, keep_stage_one: list | None = None,
                       tensorboard: bool = False, compile: str = "auto") -> list[dict]:
    """``train_subset`` for several runs of one method at once, packed; metrics per run
    (``keep_stage_one``: per run). Each run writes what ``train_subset`` writes (its epoch
    scalars with ``tensorboard``) and resumes from a checkpoint already in its ``out``."""
    from bvkit.train.packing import PackMember, train_packed

    data = _long_tailed(dataset, imbalance, profile, data_root, n_max, data_seed)
    members = [PackMember(seed, indices, out) for seed, indices, out in zip(seeds, train_indices, outs)]
    target, extra = _resolved(method, recipe, overrides)
    results = train_packed(target, data, members, device=device, progress=False, resume=True,
                           tensorboard=tensorboard, compile=compile, **extra)
    for result, keep in zip(results, keep_stage_one or [False] * len(results)):
        _keep_checkpoint(Path(result.out), keep)
    return [result.metrics for result in results]


def _keep_checkpoint(out: Path, keep_stage_one: bool) -> None:
    """A finished run's checkpoints: the stage-one weights alone where a later stage reuses
    them (``out/checkpoint.pt``), none otherwise (nested runs' included): a study stays lean."""
    from bvkit.train.checkpoint import CHECKPOINT, keep_stage_one_only

    for path in sorted(out.rglob(CHECKPOINT)):
        if keep_stage_one and path == out / CHECKPOINT:
            keep_stage_one_only(path)
        else:
            path.unlink()


def _resolved(method: str, recipe, overrides: dict | None) -> tuple[Any, dict]:
    """What to train and the overrides still to apply: the planned recipe as it is, else the
    method's name with ``overrides``, resolved by the trainer (a run function called by hand)."""
    return (recipe, {}) if recipe is not None else (method, dict(overrides or {}))


@lru_cache(maxsize=1)
def _long_tailed(dataset, imbalance, profile, root, n_max, seed: int = 0):
    """The long-tailed set (drawn with the study's data ``seed``, as planned), loaded once per
    worker process: consecutive runs of a study share it."""
    from bvkit.data import make_long_tailed

    return make_long_tailed(dataset, imbalance=imbalance, profile=profile, root=root, seed=seed,
                            **({"n_max": n_max} if n_max is not None else {}))


def select_run_function(ref: str | Callable | None = None) -> str | Callable:
    """The run function that trains a study's runs, as given or as a ``module:function``
    reference: ``ref`` itself when given, else the testing hook ``BVKIT_STUDY_RUNNER``, else
    :data:`DEFAULT_RUN_FUNCTION`. The one place that makes this choice (the runner, ``execute``
    and :func:`resolve_run_function` all ask it)."""
    return ref or os.environ.get(RUNNER_ENV) or DEFAULT_RUN_FUNCTION


def resolve_run_function(ref: str | Callable | None = None) -> Callable:
    """The function :func:`select_run_function` picks, imported where it is a reference."""
    ref = select_run_function(ref)
    if callable(ref):
        return ref
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
            dataset: str, blocking: bool = False, not_before: float = 0.0) -> list[Outcome]:
    """Train one run unless it is done or another process holds it (then report "busy").

    ``blocking`` waits for the holder instead. A failure recorded after ``not_before`` (this
    study's start) is reported, not retried, so two processes never repeat a run (nor one
    process a backbone that several runs reuse). A run reusing a stage one has that run
    executed first, the same way; the outcomes of both come back, the task's last.
    """
    run_function = select_run_function(run_function)
    first: list[Outcome] = []
    if task.stage_one is not None and not store.is_done(Path(study_dir), task.run_id):
        first = execute(task.stage_one, train_indices, study_dir, run_function, dataset, blocking, not_before)
        if first[-1].status in ("busy", "failed"):
            return first + [_not_started(Path(study_dir), task, first[-1], blocking)]
    return first + execute_pack([task], [train_indices], study_dir, dataset, blocking, not_before,
                                run_function=run_function)


def execute_chain(tasks: list[RunTask], train_indices: list, study_dir: str, run_function: str | Callable | None,
                  dataset: str, blocking: bool = False, not_before: float = 0.0) -> list[Outcome]:
    """``execute`` for runs in turn in one worker: a backbone, then the runs that reuse its
    stage one (``bvkit.study.runner.chains``), which so start as soon as it is done."""
    outcomes: list[Outcome] = []
    for task, indices in zip(tasks, train_indices):
        outcomes.extend(execute(task, indices, study_dir, run_function, dataset, blocking, not_before))
    return outcomes


def _not_started(root: Path, task: RunTask, stage_one: Outcome, blocking: bool) -> Outcome:
    """The outcome of ``task`` when its stage one is held elsewhere ("busy") or failed (recorded
    as this run's failure too, so that the study's status names the cause)."""
    if stage_one.status == "busy":
        return Outcome(task.run_id, task.label, task.subset, "busy")
    line = f"its stage one {stage_one.run_id} failed: {stage_one.error}"
    with store.file_lock(store.run_lock_path(root, task.run_id), blocking=blocking) as held:
        if not held:
            return Outcome(task.run_id, task.label, task.subset, "busy")
        atomic_write_text(store.failed_path(root, task.run_id), line + "\n")
    return Outcome(task.run_id, task.label, task.subset, "failed", error=line)


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
            outcome = _claim(root, task, held, not_before)
            if outcome is None:
                todo.append((task, indices))
            else:
                outcomes[task.run_id] = outcome
        if todo:
            for outcome in _train(root, todo, dataset, run_function):
                outcomes[outcome.run_id] = outcome
    return [outcomes[task.run_id] for task in tasks]


def _claim(root: Path, task: RunTask, held: bool, not_before: float) -> Outcome | None:
    """None when this process should train ``task`` (its lock held), else why not."""
    if not held:
        return Outcome(task.run_id, task.label, task.subset, "busy")
    if store.is_done(root, task.run_id):
        return Outcome(task.run_id, task.label, task.subset, "cached")
    failed = store.failed_path(root, task.run_id)
    if failed.is_file() and failed.stat().st_mtime >= not_before:
        error = failed.read_text(encoding="utf-8", errors="replace").strip()
        return Outcome(task.run_id, task.label, task.subset, "failed", error=error)
    return None


def _train(root: Path, todo: list, dataset: str, run_function: str | Callable | None) -> list[Outcome]:
    """Train the claimed runs ``todo`` ((task, indices) pairs) into fresh temporary
    directories, then rename each into place; a failure is recorded per run (retried next time)."""
    tmps = []
    for task, _ in todo:
        interrupted = store.clean_run_leftovers(root, task.run_id)
        tmp = store.temp_name(store.run_dir(root, task.run_id))
        if interrupted is not None:  # resumed from its last epoch's checkpoint (alone or in a pack)
            os.rename(interrupted, tmp)
        else:
            tmp.mkdir(parents=True)
        tmps.append(tmp)
    start = time.perf_counter()
    first = todo[0][0]
    stage_one = _stage_one_checkpoint(root, first)
    try:
        load_plugins(first.plugins, [root])  # a worker process registers the study's own methods first
        if len(todo) == 1 and run_function is not None:
            results = [resolve_run_function(run_function)(
                first.method, dataset, tmps[0], train_indices=todo[0][1], **first.kwargs,
                stage_one=str(stage_one) if stage_one else None, keep_stage_one=first.keeps_stage_one)]
        else:  # a pack: runs of their own stage one (reusing ones are not packable)
            common = {k: v for k, v in first.kwargs.items() if k != "seed"}
            results = train_pack_subsets(first.method, dataset, tmps, train_indices=[i for _, i in todo],
                                         seeds=[t.seed for t, _ in todo],
                                         keep_stage_one=[t.keeps_stage_one for t, _ in todo], **common)
        seconds = (time.perf_counter() - start) / len(todo)
        outcomes = []
        for (task, _), tmp, result in zip(todo, tmps, results):
            _finish_run_dir(tmp, task, result, seconds, task.stage_one.run_id if stage_one else None)
            os.rename(tmp, store.run_dir(root, task.run_id))
            store.failed_path(root, task.run_id).unlink(missing_ok=True)
            outcomes.append(Outcome(task.run_id, task.label, task.subset, "ran", seconds))
        fsync_directory(root / store.RUNS)
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
            atomic_write_text(store.failed_path(root, task.run_id), line + "\n")
            outcomes.append(Outcome(task.run_id, task.label, task.subset, "failed",
                                    time.perf_counter() - start, line))
        return outcomes


def _stage_one_checkpoint(root: Path, task: RunTask) -> Path | None:
    """The checkpoint ``task`` takes its stage one from; None when it trains its own (no
    stage one to reuse, or that run finished without keeping one: a study run before the
    sharing was planned)."""
    if task.stage_one is None:
        return None
    from bvkit.train.checkpoint import CHECKPOINT

    path = store.run_dir(root, task.stage_one.run_id) / CHECKPOINT
    return path if path.is_file() else None


def _finish_run_dir(tmp: Path, task: RunTask, result: Any, seconds: float, stage_one: str | None) -> None:
    if not (tmp / "predictions.npz").is_file():
        raise BvkitError("the run function wrote no predictions.npz")
    if not (tmp / "metrics.json").is_file():
        if not isinstance(result, dict):
            raise BvkitError("the run function wrote no metrics.json and returned no metrics dict")
        atomic_write_text(tmp / "metrics.json", json.dumps(result, indent=2, default=_jsonable))
    info = {
        "run_id": task.run_id,
        "method": task.label,
        "recipe": task.method,
        "subset": task.subset,
        "seed": task.seed,
        "stage_one": stage_one,  # the run whose stage one this run reused (None: trained its own)
        "seconds": seconds,
        "host": socket.gethostname(),
        "settings": {key: value for key, value in task.kwargs.items() if key != "recipe"},
        "resolved_recipe": task.recipe.to_dict() if task.recipe is not None else None,  # what its id digests
    }
    atomic_write_text(tmp / "run.json", json.dumps(info, indent=2, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
