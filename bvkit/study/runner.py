"""Run a study: plan its runs, train what is missing (alone or packed, on any backend), gather.

Runs are cached by content-addressed id (``bvkit.study.planning``) and trained under per-run
locks (``bvkit.study.execution``), so rerunning the same command resumes an interrupted study
and two processes on one directory share its runs: a process skips a run another one holds,
then waits for it at the end. A run that reuses another run's stage one (``bvkit.study.planning``)
runs in the same worker right after it (``chains``), so each subset's runs finish together, in
plan order (subset-major). The study directory is described in ``docs/formats.md``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bvkit.atomic import write_if_changed
from bvkit.data.subsets import save_subsets
from bvkit.plugins import load_plugin
from bvkit.study import store
from bvkit.study.backends import check_backend, dispatch, parse_jobs, resolve_jobs
from bvkit.study.execution import (
    DEFAULT_RUN_FUNCTION,
    RUNNER_ENV,
    Outcome,
    execute_chain,
    execute_pack,
    resolve_run_function,
    select_run_function,
)
from bvkit.study.packs import check_packing, group_packs
from bvkit.study.planning import RunTask, assign_devices, make_subsets, plan_runs, planned_runs, unique_runs
from bvkit.study.gather import gather
from bvkit.study.spec import StudySpec, load_spec


def prepare(spec: StudySpec, study_dir: Path) -> tuple[Any, list[np.ndarray], list[RunTask]]:
    """Write spec.toml and subsets.npz, clean leftovers; returns (data, subsets, planned runs)."""
    data, subsets = make_subsets(spec)
    with store.study_lock(study_dir):
        (study_dir / store.RUNS).mkdir(exist_ok=True)
        store.clean_leftovers(study_dir)
        write_if_changed(study_dir / "spec.toml", spec.text.encode("utf-8"))
        _copy_plugins(spec, study_dir)
        save_subsets(study_dir / "subsets.npz", subsets)
    return data, subsets, plan_runs(spec, subsets, study_dir)


def _copy_plugins(spec: StudySpec, study_dir: Path) -> None:
    """The spec's plugin modules beside its copy in the study directory, so that the directory's
    own spec.toml finds them (workers, a later rerun): the code that made the runs stays with them."""
    for name in spec.plugins:
        source = load_plugin(name, [spec.folder])
        if source is None:
            continue
        if source.name == "__init__.py":
            shutil.copytree(source.parent, study_dir / source.parent.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif source.parent != study_dir.resolve():
            write_if_changed(study_dir / f"{name.rpartition('.')[2]}.py", source.read_bytes())


def run_study(spec: StudySpec | str | Path, out: str | Path, *, jobs: int | str = 1, backend: str = "loky",
              scheduler: str | None = None, run_function: str | Callable | None = None,
              log: Callable[[str], None] | None = print, pack: str | None = None,
              pack_size: int | None = None) -> dict:
    """Train every missing run of ``spec`` into ``out`` and gather; returns counts per outcome.

    ``jobs``: runs in parallel, or ``auto`` (``bvkit.study.backends.resolve_jobs``: one worker
    per GPU the runs use, else one per CPU core).

    ``pack`` (auto / always / never; default: each method's spec setting) trains the runs of one
    method that differ only by subset and seed ``pack_size`` at a time as one packed network
    (``bvkit.study.packs``). Only the default run function packs.
    """
    if not isinstance(spec, StudySpec):
        spec = load_spec(spec)
    jobs = parse_jobs(jobs)  # a bad count fails before any planning; auto is resolved once the devices are known
    check_backend(backend, scheduler)
    study_dir = Path(out)
    log = log or (lambda message: None)
    if run_function is None and os.environ.get(RUNNER_ENV):
        log(f"using run function {os.environ[RUNNER_ENV]} from {RUNNER_ENV} (a testing hook)")
    run_function = select_run_function(run_function)  # chosen here: remote workers may not share this environment
    if isinstance(run_function, str):
        resolve_run_function(run_function)  # fail early on a bad reference
    started = time.time()
    data, subsets, planned = prepare(spec, study_dir)
    tasks = assign_devices(unique_runs(planned))
    todo = [t for t in tasks if not store.is_done(study_dir, t.run_id)]
    jobs = resolve_jobs(jobs, [t.device for t in todo])
    log(f"{spec.name}: {len(tasks)} runs, {len(tasks) - len(todo)} cached, {len(todo)} to train "
        f"({jobs} job{'s' if jobs > 1 else ''}, {backend})")
    check_packing(pack, pack_size)
    packs = (group_packs(spec, todo, pack, pack_size) if run_function == DEFAULT_RUN_FUNCTION
             else [[t] for t in todo])
    if any(len(group) > 1 for group in packs):
        log(f"packing: {len(todo)} runs in {len(packs)} packs")
    outcomes: dict[str, Outcome] = {}
    wanted = {t.run_id for t in todo}
    for blocking in (False, True):  # first skip the runs other processes hold, then wait for them
        busy = {t.run_id for t in todo if outcomes.get(t.run_id, Outcome("", "", 0, "busy")).status == "busy"}
        groups = [[t for t in group if t.run_id in busy] for group in packs]
        groups = [group for group in groups if group]
        if not groups:
            break
        calls = [(execute_chain, (g, [subsets[t.subset] for t in g], str(study_dir), run_function,
                                  spec.data.dataset, blocking, started)) if chained else
                 (execute_pack, (g, [subsets[t.subset] for t in g], str(study_dir), spec.data.dataset, blocking,
                                 started))
                 for chained, g in chains(groups)]
        for result in dispatch(calls, jobs=jobs, backend=backend, scheduler=scheduler):
            for outcome in result:  # a run reusing a stage one reports that run's outcome too
                settled = outcomes.get(outcome.run_id)
                if outcome.run_id not in wanted or (settled is not None and settled.status != "busy"):
                    continue
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


def gather_study(study_dir: str | Path) -> list[str]:
    """``gather`` a study directory from its finished runs alone (no training): metrics.csv with
    every planned run's state, and the prediction files of the methods whose runs are all done;
    returns those methods. Safe beside a running study (the directory lock)."""
    spec, planned = planned_runs(study_dir)
    data, _ = make_subsets(spec)
    return gather(Path(study_dir), spec, planned, train_counts=data.counts, labels=data.test.labels,
                  class_names=data.class_names)


def chains(groups: list[list[RunTask]]) -> list[tuple[bool, list[RunTask]]]:
    """Dispatch units of the groups to train, in order: ``(True, runs)`` for single runs chained
    to their backbone (a run and every later run that reuses its stage one, trained in turn by
    one worker), ``(False, pack)`` for a pack. A chain sits where its first run was."""
    units: list[tuple[bool, list[RunTask]]] = []
    chain_of: dict[str, list[RunTask]] = {}
    for group in groups:
        if len(group) > 1:
            units.append((False, group))
            continue
        task = group[0]
        key = task.stage_one.run_id if task.stage_one is not None else task.run_id
        if key in chain_of:
            chain_of[key].append(task)
        else:
            chain_of[key] = [task]
            units.append((True, chain_of[key]))
    return units


def _log_outcome(log, outcome: Outcome, done: int, total: int) -> None:
    what = {"ran": f"trained in {outcome.seconds:.1f} s", "cached": "done by another process",
            "failed": f"FAILED: {outcome.error}"}[outcome.status]
    log(f"[{done}/{total}] {outcome.label} subset {outcome.subset}: {what}")
