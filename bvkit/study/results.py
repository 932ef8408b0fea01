"""Gather finished runs into the study's shared outputs, and read a study back for notebooks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bvkit.errors import BvkitError
from bvkit.study import store
from bvkit.study.spec import StudySpec

if TYPE_CHECKING:
    import pandas as pd

    from bvkit.study.runner import RunTask

ACCURACY_KEYS = ("all", "many", "medium", "few")


def metric_row(task: "RunTask", study_dir: Path) -> dict:
    """One metrics.csv row: the run's state and, when done, its accuracies, MFLOPs and seconds."""
    state, error = store.run_state(study_dir, task.run_id)
    row = {"method": task.label, "subset": task.subset, "seed": task.seed, "run_id": task.run_id,
           "status": state, "error": error}
    if state == "done":
        folder = store.run_dir(study_dir, task.run_id)
        metrics = store.read_json(folder / "metrics.json")
        info = store.read_json(folder / "run.json") if (folder / "run.json").is_file() else {}
        row.update(accuracy_of(metrics))
        row["mflops"] = _first(metrics, ("mflops",), ("flops", "mflops"), ("compute", "mflops"))
        row["seconds"] = _first(metrics, ("seconds",), ("time", "seconds")) or info.get("seconds")
    return row


def accuracy_of(metrics: dict) -> dict:
    """all / many / medium / few accuracy from a metrics.json, wherever the trainer nested them."""
    for table in (metrics.get("test"), metrics.get("accuracy"), metrics):
        if isinstance(table, dict) and "all" in table and not isinstance(table["all"], dict):
            return {key: table.get(key) for key in ACCURACY_KEYS}
    return {key: None for key in ACCURACY_KEYS}


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


def _first(metrics: dict, *paths):
    for path in paths:
        value = metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, dict):
            return value
    return None


def gather(study_dir: str | Path, spec: StudySpec, tasks: list["RunTask"], *, train_counts, labels,
           class_names) -> list[str]:
    """Write predictions/<method>.npz for complete methods, metrics.csv and expert_usage.csv.

    Idempotent and atomic (each file is replaced whole, under the directory lock); a method
    with a missing run gets no prediction file (a stale one is removed) until it is complete.
    Returns the methods gathered.
    """
    import pandas as pd

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
            logits = []
            for task in runs:
                folder = store.run_dir(study_dir, task.run_id)
                usage.extend(usage_rows(task, store.read_json(folder / "metrics.json")))
                logits.append(_run_logits(folder, labels))
            _save_predictions(target, labels=labels, logits=np.stack(logits),
                              train_counts=np.asarray(train_counts, dtype=np.int64),
                              class_names=np.asarray(class_names, dtype=str))
            gathered.append(method.name)
        wanted = {f"{m.name}.npz" for m in spec.methods}
        for stale in out.glob("*.npz"):
            if stale.name not in wanted:
                stale.unlink()
        frame = pd.DataFrame(rows, columns=list(store.METRIC_COLUMNS))
        store.atomic_write_text(study_dir / "metrics.csv", frame.to_csv(index=False))
        usage_path = study_dir / "expert_usage.csv"
        if usage:
            frame = pd.DataFrame(usage, columns=list(store.USAGE_COLUMNS))
            store.atomic_write_text(usage_path, frame.to_csv(index=False))
        else:
            usage_path.unlink(missing_ok=True)
    return gathered


def _run_logits(folder: Path, labels: np.ndarray) -> np.ndarray:
    path = folder / "predictions.npz"
    with np.load(path, allow_pickle=False) as archive:
        if "logits" not in archive.files or "labels" not in archive.files:
            raise BvkitError(f"{path}: needs labels and logits")
        logits = archive["logits"]
        run_labels = archive["labels"]
    if logits.ndim == 3:
        if logits.shape[0] != 1:
            raise BvkitError(f"{path}: logits of one run must be (1, N, C) or (N, C), got {logits.shape}")
        logits = logits[0]
    if not np.array_equal(run_labels, labels) or logits.shape[0] != len(labels):
        raise BvkitError(f"{path}: its test labels differ from the study's test set")
    return logits


def _save_predictions(path: Path, **arrays) -> None:
    """The shared prediction-file writer (atomic: temp file + rename), or np.savez without it."""
    try:
        from bvkit.decompose import save_predictions
    except ImportError:
        store.atomic_savez(path, **arrays)
        return
    save_predictions(path, **arrays)


class Study:
    """A study directory read back: ``metrics`` (one row per run), ``predictions``, ``decompose``."""

    def __init__(self, path: str | Path):
        from bvkit.study.spec import spec_of

        self.path = Path(path)
        self.spec = spec_of(self.path)
        self._predictions = None

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r}, methods={self.methods})"

    @property
    def methods(self) -> list[str]:
        return [m.name for m in self.spec.methods]

    @property
    def metrics(self) -> "pd.DataFrame":
        import pandas as pd

        path = self.path / "metrics.csv"
        if not path.is_file():
            return pd.DataFrame(columns=list(store.METRIC_COLUMNS))
        return pd.read_csv(path)

    @property
    def expert_usage(self) -> "pd.DataFrame":
        import pandas as pd

        path = self.path / "expert_usage.csv"
        if not path.is_file():
            return pd.DataFrame(columns=list(store.USAGE_COLUMNS))
        return pd.read_csv(path)

    @property
    def subsets(self) -> list[np.ndarray]:
        return store.load_subsets(self.path / "subsets.npz")

    @property
    def predictions(self) -> dict[str, dict[str, np.ndarray]]:
        """method -> {"labels", "logits" (D, N, C), "train_counts", "class_names"} (complete methods)."""
        if self._predictions is None:
            self._predictions = {}
            for name in self.methods:
                path = self.path / store.PREDICTIONS / f"{name}.npz"
                if path.is_file():
                    with np.load(path, allow_pickle=False) as archive:
                        self._predictions[name] = {key: archive[key] for key in archive.files}
        return self._predictions

    def accuracy(self) -> "pd.DataFrame":
        """Mean and std over runs of all / many / medium / few accuracy, MFLOPs, per method."""
        done = self.metrics[self.metrics["status"] == "done"]
        columns = [c for c in (*ACCURACY_KEYS, "mflops") if c in done]
        table = done.groupby("method", sort=False)[columns].agg(["mean", "std"])
        return table.reindex([m for m in self.methods if m in table.index])

    def decompose(self, loss: str = "squared", **kwargs):
        """bvkit.decompose on every complete method, stacked: one Decomposition, ``method`` column."""
        from bvkit.decompose import Decomposition, decompose

        if not self.predictions:
            raise BvkitError(f"{self.path}: no complete method to decompose yet")
        parts = []
        for name, arrays in self.predictions.items():
            inputs = {k: arrays[k] for k in ("labels", "logits", "train_counts", "class_names") if k in arrays}
            parts.append(decompose(**inputs, loss=loss, method=name, **kwargs))
        return Decomposition.concat(parts)


def load_study(path: str | Path) -> Study:
    """Open a study directory written by ``bvkit study run``."""
    path = Path(path)
    if not path.is_dir():
        raise BvkitError(f"{path}: no such study directory")
    return Study(path)
