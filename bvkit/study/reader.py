"""The one reader of a study directory (``docs/formats.md``): its spec, metrics.csv,
expert_usage.csv, subsets.npz, predictions/ and the runs' history.csv, for notebooks, the report and the CLI.

Prediction files are read only through :mod:`bvkit.decomposition.io` (score arrays
memory-mapped where the format allows). Neither torch nor the runner is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bvkit.decomposition.core import Decomposition, decompose_file
from bvkit.decomposition.io import PredictionSet, is_prediction_set, load_predictions
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


class Study:
    """A study directory read back: ``spec``, ``metrics`` (one row per run), ``expert_usage``,
    ``subsets``, ``predictions`` (complete methods), ``accuracy()`` and ``decompose()``."""

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
    def subsets(self) -> list[np.ndarray]:
        return store.load_subsets(self.path / "subsets.npz")

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
        multi-expert method, "expert_logits" (D, M, N, C) (complete methods; the scores
        memory-mapped)."""
        return {name: {key: value for key, value in {**pset.arrays(), "expert_logits": pset.expert_logits}.items()
                       if value is not None}
                for name, pset in self.prediction_sets.items()}

    def accuracy(self) -> "pd.DataFrame":
        """Mean and std over runs of all / many / medium / few accuracy, MFLOPs, per method."""
        done = self.metrics[self.metrics["status"] == "done"]
        columns = [c for c in (*store.ACCURACY_KEYS, "mflops") if c in done]
        table = done.groupby("method", sort=False)[columns].agg(["mean", "std"])
        return table.reindex([m for m in self.methods if m in table.index])

    def decompose(self, loss: str = "squared", **kwargs) -> Decomposition:
        """bvkit.decompose on every complete method, stacked: one Decomposition (``method``
        column)."""
        if not self.prediction_sets:
            raise BvkitError(f"{self.path}: no complete method to decompose yet")
        return Decomposition.concat(decompose_file(pset, loss=loss, **kwargs)
                                    for pset in self.prediction_sets.values())


def load_study(path: str | Path) -> Study:
    """Open a study directory written by ``bvkit study run``."""
    path = Path(path)
    if not path.is_dir():
        raise BvkitError(f"{path}: no such study directory")
    return Study(path)
