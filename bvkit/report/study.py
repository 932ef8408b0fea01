"""Read a study directory into the tidy frames the figures and tables take."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bvkit.errors import BvkitError
from bvkit.report.frames import split_differences_from_comparison

DIFFERENCE_METRICS = ("accuracy", "error", "bias", "variance")


@dataclass
class StudyFrames:
    """A study's decomposition (one loss), its comparison to the reference, metrics, usage."""

    directory: Path
    loss: str
    reference: str
    per_sample: pd.DataFrame
    per_class: pd.DataFrame
    per_split: pd.DataFrame
    split_differences: pd.DataFrame  # method, split, metric, diff, diff_lo, diff_hi
    metrics: pd.DataFrame | None  # metrics.csv, when the study wrote one
    expert_usage: pd.DataFrame | None  # expert_usage.csv, routed RIDE runs only

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(self.per_split["method"]))


def read_csv_if_any(path: Path) -> pd.DataFrame | None:
    """The CSV as a frame, or None when it is absent or has no rows."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise BvkitError(f"{path}: unreadable CSV ({str(err).splitlines()[0]})") from None
    return None if frame.empty else frame


def check_study_dir(directory) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise BvkitError(f"{directory}: no such study directory")
    if not directory.is_dir():
        raise BvkitError(f"{directory}: not a directory (expected a study directory)")
    return directory


def load_study(directory, *, loss: str = "squared", reference: str = "ce", bootstrap: int = 1000,
               seed: int = 0, many: int = 100, few: int = 20) -> StudyFrames:
    """Decompose every prediction set of ``directory`` under ``loss`` (with ``bootstrap``
    intervals) and compare each method to ``reference`` with paired bootstrap intervals."""
    from bvkit.decompose import Decomposition, compare, decompose_file, find_prediction_sets

    directory = check_study_dir(directory)
    if loss not in ("squared", "zero-one", "cross-entropy"):
        raise BvkitError(f"unknown loss {loss!r} (choose squared, zero-one or cross-entropy)")
    paths = find_prediction_sets(directory)
    parts = [decompose_file(p, loss=loss, bootstrap=bootstrap, seed=seed, many=many, few=few)
             for p in paths]
    decomposition = Decomposition.concat(parts)
    if reference not in decomposition.methods:
        raise BvkitError(f"reference method {reference!r} not in {directory} "
                         f"(methods: {', '.join(decomposition.methods)}); use --reference")
    if len(decomposition.methods) < 2:
        raise BvkitError(f"{directory}: only {reference!r} has predictions; nothing to compare")
    comparison = compare(decomposition, reference, bootstrap=bootstrap, seed=seed)
    metrics = [m for m in DIFFERENCE_METRICS if m in comparison.per_split.columns]
    return StudyFrames(
        directory=directory, loss=loss, reference=reference,
        per_sample=decomposition.per_sample, per_class=decomposition.per_class,
        per_split=decomposition.per_split,
        split_differences=split_differences_from_comparison(comparison.per_split, metrics),
        metrics=read_csv_if_any(directory / "metrics.csv"),
        expert_usage=read_csv_if_any(directory / "expert_usage.csv"),
    )
