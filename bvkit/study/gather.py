"""Gather finished runs into the study's shared outputs: predictions/<method>.npz, metrics.csv and
expert_usage.csv (``docs/formats.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bvkit.atomic import atomic_write_text
from bvkit.data.profiles import FEW_SHOT, MANY_SHOT
from bvkit.errors import BvkitError
from bvkit.study import store
from bvkit.study.spec import StudySpec

if TYPE_CHECKING:
    import pandas as pd

    from bvkit.study.planning import RunTask

def metric_row(task: "RunTask", study_dir: Path) -> dict:
    """One metrics.csv row: the run's state, the run whose stage one it reuses (planned; when
    done, the one it did reuse) and, when done, its accuracies, MFLOPs, seconds, final
    training accuracy, stage-one epochs, validation accuracy and the validation check (the check
    images' accuracy and the z of validation against them, ``bvkit.train.evaluation``)."""
    state, error = store.run_state(study_dir, task.run_id)
    row = {"method": task.label, "subset": task.subset, "seed": task.seed, "run_id": task.run_id,
           "status": state, "error": error, "stage_one": task.stage_one.run_id if task.stage_one else None}
    if state == "done":
        folder = store.run_dir(study_dir, task.run_id)
        metrics = store.read_json(folder / "metrics.json")
        info = store.read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
        row.update(accuracy_of(metrics))
        row["mflops"] = metrics.get("mflops")
        row["seconds"] = metrics.get("seconds") or info.get("seconds")  # a run function may leave it out
        row["stage_one"] = info.get("stage_one")
        row.update({key: metrics.get(key) for key in ("train_accuracy", "epochs", "val_accuracy")})
        check = metrics.get("val_check") or {}
        row.update(check_accuracy=check.get("check_accuracy"), val_check_z=check.get("z"))
    return row


def accuracy_of(metrics: dict) -> dict:
    """all / many / medium / few accuracy from a metrics.json's ``accuracy`` table (None each
    where it has none) and the shot thresholds it was split at (``split_thresholds``; runs
    written before it was recorded were all split at the defaults)."""
    table = metrics.get("accuracy") or {}
    thresholds = metrics.get("split_thresholds") or {"many": MANY_SHOT, "few": FEW_SHOT}
    return {**{key: table.get(key) for key in store.ACCURACY_KEYS},
            "many_threshold": thresholds["many"], "few_threshold": thresholds["few"]}


def usage_rows(task: "RunTask", metrics: dict) -> list[dict]:
    """Tidy expert-usage rows of a routed run (``expert_usage``: split -> share of 1..n experts)."""
    usage = metrics.get("expert_usage")
    if not isinstance(usage, dict):
        return []
    rows = []
    for split, shares in usage.items():
        for n, share in enumerate(shares or (), 1):
            rows.append({"method": task.label, "subset": task.subset, "split": split, "n_experts": n,
                         "share": share})
    return rows


def gather(study_dir: str | Path, spec: StudySpec, tasks: list["RunTask"], *, train_counts, labels,
           class_names) -> list[str]:
    """Write predictions/<method>.npz for complete methods, metrics.csv and expert_usage.csv.

    Idempotent and atomic (each file is replaced whole, under the directory lock); a method
    with a missing run gets no prediction file (a stale one is removed) until it is complete.
    Returns the methods gathered.
    """
    import pandas as pd

    from bvkit.decomposition.io import save_predictions  # the one prediction-file writer (atomic)

    study_dir = Path(study_dir)
    labels = np.asarray(labels, dtype=np.int64)
    gathered, rows, usage = [], [], []
    by_label: dict[str, list] = {}
    for task in tasks:
        by_label.setdefault(task.label, []).append(task)
    with store.study_lock(study_dir):
        out = study_dir / store.PREDICTIONS
        out.mkdir(exist_ok=True)
        for method in spec.methods:
            runs = sorted(by_label.get(method.name, []), key=lambda t: t.subset)
            runs_rows = [metric_row(t, study_dir) for t in runs]
            rows.extend(runs_rows)
            target = out / f"{method.name}.npz"
            if not runs or any(r["status"] != "done" for r in runs_rows):
                target.unlink(missing_ok=True)
                continue
            logits, experts, weights = [], [], []
            for task in runs:
                folder = store.run_dir(study_dir, task.run_id)
                usage.extend(usage_rows(task, store.read_json(folder / "metrics.json")))
                run_logits, run_experts, run_weights = _run_logits(folder, labels)
                logits.append(run_logits)
                experts.append(run_experts)
                weights.append(run_weights)
            stacked = _stacked_experts(experts)
            save_predictions(target, labels=labels, logits=np.stack(logits),
                             train_counts=np.asarray(train_counts, dtype=np.int64),
                             class_names=np.asarray(class_names, dtype=str),
                             expert_logits=stacked,
                             expert_weights=None if stacked is None else _stacked_weights(method.name, weights))
            gathered.append(method.name)
        wanted = {f"{m.name}.npz" for m in spec.methods}
        for stale in out.glob("*.npz"):
            if stale.name not in wanted:
                stale.unlink()
        frame = pd.DataFrame(rows, columns=list(store.METRIC_COLUMNS)).astype({"epochs": "Int64", **{c: "Int64" for c in store.THRESHOLD_COLUMNS}})
        atomic_write_text(study_dir / "metrics.csv", frame.to_csv(index=False))
        usage_path = study_dir / "expert_usage.csv"
        if usage:
            frame = pd.DataFrame(usage, columns=list(store.USAGE_COLUMNS))
            atomic_write_text(usage_path, frame.to_csv(index=False))
        else:
            usage_path.unlink(missing_ok=True)
    return gathered


def _stacked_experts(experts: list) -> np.ndarray | None:
    """The runs' (M, N, C) expert logits stacked to (D, M, N, C) when every run has them with
    the same number of experts, else None (a run trained before they were recorded)."""
    if not experts or any(e is None for e in experts) or len({e.shape for e in experts}) != 1:
        return None
    return np.stack(experts)


def _stacked_weights(method: str, weights: list) -> np.ndarray | None:
    """The runs' (M,) expert weights stacked to (D, M) when every run has them, None when none
    has; some with and some without is an error (runs of one method combine their experts alike)."""
    if all(w is None for w in weights):
        return None
    if any(w is None for w in weights):
        raise BvkitError(f"{method}: {sum(w is None for w in weights)} of its {len(weights)} runs have no "
                         f"expert_weights; retrain them so that every run records them")
    return np.stack(weights)


def _run_logits(folder: Path, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A run's (N, C) test logits and, for a multi-expert model, its (M, N, C) experts' and the
    (M,) weights its logits combine them with (None: their mean)."""
    from bvkit.decomposition.io import load_predictions  # the one prediction-file reader

    path = folder / "predictions.npz"
    run = load_predictions(path)
    if run.kind != "logits":
        raise BvkitError(f"{path}: needs labels and logits")
    logits = run.scores
    if logits.ndim == 3:
        if logits.shape[0] != 1:
            raise BvkitError(f"{path}: logits of one run must be (1, N, C) or (N, C), got {logits.shape}")
        logits = logits[0]
    if not np.array_equal(run.labels, labels) or logits.shape[0] != len(labels):
        raise BvkitError(f"{path}: its test labels differ from the study's test set")
    experts, weights = run.expert_logits, run.expert_weights
    if experts is not None:
        experts = np.asarray(experts[0] if experts.ndim == 4 else experts)
    if weights is not None:
        weights = np.asarray(weights[0] if weights.ndim == 2 else weights)
    return np.asarray(logits), experts, weights
