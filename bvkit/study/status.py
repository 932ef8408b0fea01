"""The state of every run of a study directory, as a text table (``bvkit study status``)."""

from __future__ import annotations

from pathlib import Path

from bvkit.study import store
from bvkit.study.gather import metric_row
from bvkit.study.planning import planned_runs
from bvkit.train.progress import read_progress


def status_table(study_dir: str | Path) -> str:
    """A text table of every run of the study (done / failed / running / pending, and the run
    whose stage one it reuses) and a summary."""
    import pandas as pd

    spec, tasks = planned_runs(study_dir)
    rows = [metric_row(task, Path(study_dir)) for task in tasks]
    frame = pd.DataFrame(rows).reindex(columns=list(store.METRIC_COLUMNS))  # no run done yet: no result columns
    shown = frame[["method", "subset", "seed", "status", "seconds", "all", "run_id", "stage_one"]].copy()
    shown["seconds"] = shown["seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    shown["stage_one"] = shown["stage_one"].fillna("")
    shown["all"] = shown["all"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    shown = shown.rename(columns={"all": "accuracy"})
    shown.insert(4, "progress", [in_flight(Path(study_dir), row) for row in rows])
    counts = frame["status"].value_counts()
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "running", "failed", "pending") if counts.get(s, 0))
    lines = [f"{spec.name}: {len(frame)} runs: {summary}", shown.to_string(index=False)]
    for row in rows:
        if row["status"] == "failed":
            lines.append(f"failed {row['method']} subset {row['subset']} ({row['run_id']}): {row['error']}")
    return "\n".join(lines)


def in_flight(study_dir: Path, row: dict) -> str:
    """A running run's last finished epoch (``stage epoch/epochs``, from the progress file of
    its newest temporary directory), else ""."""
    if row["status"] != "running":
        return ""
    temps = sorted((study_dir / store.RUNS).glob(f"{row['run_id']}{store.TMP_MARK}*"), key=lambda p: p.stat().st_mtime)
    progress = read_progress(temps[-1]) if temps else None
    if progress is None:
        return "starting"
    return f"{progress['stage']} {progress['epoch']}/{progress['epochs']}"
