"""The committed studies keep their runs under today's content-derived run ids: every run they
hold is planned (under the id it was made with) and `bvkit study run` on them trains nothing that
is there (``bvkit.study.planning``: a run's id is a digest of its resolved recipe; directories
made before keep their ids)."""

import os
from pathlib import Path

import pytest

from bvkit.study import run_study, store
from bvkit.study.planning import planned_runs

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(path.parent for path in (ROOT / "experiments" / "results").glob("*/spec.toml"))


def held_runs(study_dir: Path) -> dict[str, str]:
    """run id -> "done" (a finished run directory) or "running" (a temporary one) of a study."""
    held = {}
    for entry in (study_dir / store.RUNS).iterdir():
        if entry.is_dir():
            run_id, _, tmp = entry.name.partition(store.TMP_MARK)
            held[run_id] = "running" if tmp else "done"
    return held


@pytest.mark.parametrize("study_dir", COMMITTED, ids=lambda path: path.name)
def test_every_committed_run_is_planned_under_the_id_it_was_made_with(study_dir):
    spec, tasks = planned_runs(study_dir)
    planned = {task.run_id: store.run_state(study_dir, task.run_id)[0] for task in tasks}
    held = held_runs(study_dir)
    assert held, f"{study_dir.name}: no run committed"
    missing = sorted(set(held) - set(planned))
    assert not missing, f"{study_dir.name}: runs the plan no longer names (they would be trained again): {missing}"
    for run_id, state in held.items():  # a run in flight: "running" while its process holds it, else resumable
        assert planned[run_id] == state if state == "done" else planned[run_id] in ("running", "pending")
    for task in tasks:  # a reusing run points at its provider's committed run
        if task.stage_one is not None and task.stage_one.run_id in held:
            assert (planned[task.stage_one.run_id] == "done") == (held[task.stage_one.run_id] == "done")


def never_called(*args, **kwargs):
    raise AssertionError("a finished committed run was trained again")


@pytest.mark.skipif(not (ROOT / "data-cache" / "cifar-10-batches-py").is_dir()
                    and not os.environ.get("BVKIT_DATA"), reason="needs the CIFAR-10 copy (BVKIT_DATA)")
def test_study_run_on_the_finished_committed_study_trains_nothing(tmp_path, monkeypatch):
    """The whole `bvkit study run` path on a copy of the 40-epoch study (its run directories
    linked, not copied): every run cached, none trained, the gathered metrics unchanged."""
    source = ROOT / "experiments" / "results" / "cifar10_lt_study"
    if not os.environ.get("BVKIT_DATA"):
        monkeypatch.setenv("BVKIT_DATA", str(ROOT / "data-cache"))
    copy = tmp_path / "study"
    (copy / store.RUNS).mkdir(parents=True)
    for name in ("spec.toml", "subsets.npz"):
        (copy / name).write_bytes((source / name).read_bytes())
    for run in (source / store.RUNS).iterdir():
        if run.is_dir():
            (copy / store.RUNS / run.name).symlink_to(run)
    counts = run_study(source / "spec.toml", copy, run_function=never_called, log=None)
    assert counts == {"cached": len(held_runs(source)), "ran": 0, "failed": 0}
    ours, theirs = (store_metrics(d) for d in (copy, source))
    assert ours == theirs


def store_metrics(study_dir: Path) -> list[tuple]:
    import pandas as pd

    frame = pd.read_csv(study_dir / "metrics.csv")
    return sorted(map(tuple, frame[["method", "subset", "run_id", "status", "all"]].astype(str).to_numpy()))
