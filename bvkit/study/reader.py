"""The one reader of a study directory (``docs/formats.md``): its spec, metrics.csv,
expert_usage.csv, subsets.npz, predictions/ and the runs' history.csv, for notebooks, the report and the CLI.

Prediction files are read only through :mod:`bvkit.decomposition.io` (score arrays
memory-mapped where the format allows). Neither torch nor the runner is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bvkit.data.profiles import FEW_SHOT, MANY_SHOT, check_thresholds, split_accuracy
from bvkit.data.subsets import load_subsets
from bvkit.decomposition.core import Decomposition
from bvkit.decomposition.io import PredictionSet, is_prediction_set, load_predictions
from bvkit.decomposition.sets import decompose_sets
from bvkit.errors import BvkitError
from bvkit.study import store
from bvkit.study.spec import spec_of

if TYPE_CHECKING:
    import pandas as pd


HISTORY = "history.csv"


def read_table(path: Path, columns=()) -> "pd.DataFrame":
    """A study's CSV as a frame; an empty one (with ``columns``) when absent or without rows."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=list(columns))
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(columns))
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BvkitError(f"{path}: unreadable CSV ({str(err).splitlines()[0]})") from None


def read_histories(directory: str | Path, metrics: "pd.DataFrame") -> "pd.DataFrame":
    """Every finished run's training curve, tidy: one row per epoch with ``method``, ``subset``,
    ``run_id``, ``step`` (1, 2, ... from the start of the model's training) and the columns of
    its ``runs/<run_id>/history.csv``. A run that reuses a stage one (``stage_one`` in
    metrics.csv) starts with that run's epochs, marked ``reused``, so cRT's curve is CE's
    followed by its own. Empty when no run has a history file."""
    import pandas as pd

    directory = Path(directory)
    done = metrics[metrics["status"] == "done"] if "status" in metrics else metrics
    curves = []
    for row in done.itertuples(index=False):
        chain = [getattr(row, "stage_one", None), row.run_id]
        parts = [read_table(store.run_dir(directory, run) / HISTORY).assign(reused=run != row.run_id)
                 for run in chain if isinstance(run, str) and run]
        parts = [part for part in parts if not part.empty]
        if not parts:
            continue
        curve = pd.concat(parts, ignore_index=True)
        curve.insert(0, "step", range(1, len(curve) + 1))
        curve.insert(0, "run_id", row.run_id)
        curve.insert(0, "subset", row.subset)
        curve.insert(0, "method", row.method)
        curves.append(curve)
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["method", "subset", "run_id", "step", "reused"])


def read_snapshots(directory: str | Path, metrics: "pd.DataFrame", methods: list[str]) -> dict[str, dict]:
    """Each method's test snapshots along its own stage one (``runs/<run_id>/snapshots.npz``,
    ``docs/formats.md``), stacked over its runs in subset order: ``{"epochs" (K,), "logits" (K,
    D, N, C) float16, "labels" (N,)}`` plus ``"expert_logits" (K, D, M, N, C)`` for a
    multi-expert method. Only methods whose runs are all done and all hold snapshots of the
    same epochs: not those reusing another run's stage one (cRT, tau-norm, RIDE's routers:
    their stage one is that run's), nor runs that predate snapshots."""
    directory = Path(directory)
    found = {}
    for method in methods:
        runs = metrics[metrics["method"] == method].sort_values("subset")
        if runs.empty or (runs["status"] != "done").any():
            continue
        paths = [directory / store.RUNS / run_id / "snapshots.npz" for run_id in runs["run_id"]]
        if not all(path.is_file() for path in paths):
            continue
        loaded = []
        for path in paths:
            with np.load(path, allow_pickle=False) as archive:
                loaded.append({key: archive[key] for key in archive.files})
        if any("epochs" not in one or not np.array_equal(one["epochs"], loaded[0]["epochs"]) for one in loaded):
            continue
        stacked = {"epochs": loaded[0]["epochs"], "labels": loaded[0]["labels"],
                   "logits": np.stack([one["logits"] for one in loaded], axis=1)}
        if all("expert_logits" in one for one in loaded):
            stacked["expert_logits"] = np.stack([one["expert_logits"] for one in loaded], axis=1)
        found[method] = stacked
    return found


class Study:
    """A study directory read back: ``spec``, ``metrics`` (one row per run), ``expert_usage``,
    ``subsets``, ``predictions`` (complete methods), ``snapshots`` (along training),
    ``accuracy()``, ``decompose()`` and ``decompose_along_training()``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.spec = spec_of(self.path)
        self._prediction_sets = None

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r}, methods={self.methods})"

    @property
    def methods(self) -> list[str]:
        return [m.name for m in self.spec.methods]

    @property
    def metrics(self) -> "pd.DataFrame":
        return read_table(self.path / "metrics.csv", store.METRIC_COLUMNS)

    @property
    def expert_usage(self) -> "pd.DataFrame":
        return read_table(self.path / "expert_usage.csv", store.USAGE_COLUMNS)

    @property
    def histories(self) -> "pd.DataFrame":
        """Every finished run's training curve (:func:`read_histories`)."""
        return read_histories(self.path, self.metrics)

    @property
    def snapshots(self) -> dict[str, dict]:
        """method -> its runs' test snapshots along stage one (:func:`read_snapshots`)."""
        return read_snapshots(self.path, self.metrics, self.methods)

    @property
    def subsets(self) -> list[np.ndarray]:
        return load_subsets(self.path / "subsets.npz")

    @property
    def prediction_sets(self) -> dict[str, PredictionSet]:
        """method -> its prediction set, for the methods whose runs are all gathered."""
        if self._prediction_sets is None:
            folder = self.path / store.PREDICTIONS
            sets = {}
            for name in self.methods:
                for path in (folder / f"{name}.npz", folder / name):
                    if is_prediction_set(path):
                        sets[name] = load_predictions(path, name=name)
                        break
            self._prediction_sets = sets
        return self._prediction_sets

    @property
    def predictions(self) -> dict[str, dict[str, np.ndarray]]:
        """method -> {"labels", "logits" (D, N, C), "train_counts", "class_names"} and, for a
        multi-expert method, "expert_logits" (D, M, N, C) and, with learned weights,
        "expert_weights" (D, M) (complete methods; the scores
        memory-mapped)."""
        return {name: {key: value for key, value in {**pset.arrays(), "expert_logits": pset.expert_logits}.items()
                       if value is not None}
                for name, pset in self.prediction_sets.items()}

    def accuracy(self, many: int = MANY_SHOT, few: int = FEW_SHOT) -> "pd.DataFrame":
        """Mean and std over runs of all / many / medium / few accuracy and MFLOPs, per method,
        the shot splits at ``many`` / ``few`` training images: metrics.csv's columns where its
        runs were split there, else each run's predictions split anew by the same rule
        (:func:`bvkit.data.profiles.split_accuracy`), so the numbers agree with a report made
        at those thresholds."""
        import pandas as pd

        many, few = check_thresholds(many, few)
        done = self.metrics[self.metrics["status"] == "done"].copy()
        stated = done.reindex(columns=list(store.THRESHOLD_COLUMNS)).fillna(
            {"many_threshold": MANY_SHOT, "few_threshold": FEW_SHOT})
        resplit = done.index[(stated["many_threshold"] != many) | (stated["few_threshold"] != few)]
        if len(resplit):
            counts = _long_tailed_counts(self.spec)
            for index in resplit:
                run = load_predictions(store.run_dir(self.path, done.at[index, "run_id"]) / "predictions.npz")
                found = split_accuracy(_predicted(run), run.labels, counts, many, few)
                done.loc[index, list(store.ACCURACY_KEYS)] = [found[key] for key in store.ACCURACY_KEYS]
        columns = [c for c in (*store.ACCURACY_KEYS, "mflops") if c in done]
        done[columns] = done[columns].apply(pd.to_numeric, errors="coerce")
        table = done.groupby("method", sort=False)[columns].agg(["mean", "std"])
        return table.reindex([m for m in self.methods if m in table.index])

    def decompose(self, loss: str = "squared", **kwargs) -> Decomposition:
        """bvkit.decompose on every complete method, stacked: one Decomposition (``method``
        column)."""
        if not self.prediction_sets:
            raise BvkitError(f"{self.path}: no complete method to decompose yet")
        return decompose_sets(self.prediction_sets.values(), loss=loss, **kwargs)

    def decompose_along_training(self, loss: str = "squared", **kwargs) -> "pd.DataFrame":
        """The decomposition of every snapshot epoch of each method that has them (``snapshots``),
        ``per_split`` rows with an ``epoch`` column; the test set's long-tailed counts give the
        splits. ``kwargs`` as ``bvkit.decompose`` (``many``, ``few``, ``bootstrap``, ...)."""
        import pandas as pd

        from bvkit.decomposition import decompose

        snapshots = self.snapshots
        if not snapshots:
            raise BvkitError(f"{self.path}: no method has test snapshots of all its runs yet")
        train_counts = next(iter(self.prediction_sets.values())).train_counts if self.prediction_sets else None
        if train_counts is None:
            train_counts = _long_tailed_counts(self.spec)
        rows = []
        for method, snaps in snapshots.items():
            for k, epoch in enumerate(snaps["epochs"]):
                part = decompose(snaps["labels"], logits=np.asarray(snaps["logits"][k], dtype=np.float32),
                                 train_counts=train_counts, loss=loss, method=method, **kwargs).per_split
                rows.append(part.assign(epoch=int(epoch)))
        return pd.concat(rows, ignore_index=True)


def _predicted(run: PredictionSet) -> np.ndarray:
    """The (N,) predicted labels of one run's prediction set (scores (N, C) or (1, N, C))."""
    scores = np.asarray(run.scores)
    if run.kind == "preds":
        return scores.reshape(-1)
    return scores.reshape(-1, scores.shape[-1]).argmax(-1)


def _long_tailed_counts(spec) -> np.ndarray:
    """The long-tailed set's per-class counts of a study's data (no images loaded)."""
    from bvkit.data import dataset_spec, long_tail_counts

    data = dataset_spec(spec.data.dataset)
    n_max = spec.data.n_max if spec.data.n_max is not None else data.n_max
    return np.asarray(long_tail_counts(n_max, data.n_classes, spec.data.imbalance, spec.data.profile))


def load_study(path: str | Path) -> Study:
    """Open a study directory written by ``bvkit study run``."""
    path = Path(path)
    if not path.is_dir():
        raise BvkitError(f"{path}: no such study directory")
    return Study(path)
