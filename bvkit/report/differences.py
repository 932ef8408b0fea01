"""Each method's difference to the reference, from tidy decomposition frames: per class (and
smoothed head to tail) and per split, with intervals from the decomposition's one bootstrap
engine (:func:`bvkit.decomposition.compare`, :func:`bvkit.decomposition.difference_replicates`).

Inputs are the decomposition's frames (``docs/formats.md``): ``per_class`` (method, loss, class,
train_count, split, accuracy, bias, variance, ...), ``per_split`` (method, loss, split, ...) and
``per_sample`` (method, loss, one row per test sample with its class and per-sample terms).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bvkit.data.profiles import SPLITS
from bvkit.decomposition import (
    Decomposition,
    combined_interval,
    compare,
    difference_leave_one_out,
    difference_replicates,
)
from bvkit.decomposition.bootstrap import intervals
from bvkit.errors import BvkitError
from bvkit.report.smoothing import default_window, moving_average


def require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BvkitError(f"{what} frame lacks column(s) {', '.join(missing)}")


def select_loss(frame: pd.DataFrame, loss: str | None) -> pd.DataFrame:
    """Rows of one loss; ``loss=None`` is allowed when the frame holds a single loss."""
    if "loss" not in frame.columns:
        return frame
    losses = list(pd.unique(frame["loss"]))
    if loss is None:
        if len(losses) > 1:
            raise BvkitError(f"frame holds several losses ({', '.join(map(str, losses))}): pick one")
        return frame
    if loss not in losses:
        raise BvkitError(f"loss {loss!r} not in frame (has {', '.join(map(str, losses))})")
    return frame[frame["loss"] == loss]


def require_reference(frame: pd.DataFrame, reference: str) -> None:
    methods = list(pd.unique(frame["method"]))
    if reference not in methods:
        raise BvkitError(f"reference method {reference!r} not found (have {', '.join(map(str, methods))})")


def class_order(per_class: pd.DataFrame) -> pd.DataFrame:
    """One row per class, head to tail: sorted by training count (descending, ties by class).

    Columns class, train_count, split, rank (0 = most training images).
    """
    require_columns(per_class, ["class", "train_count", "split"], "per_class")
    classes = per_class.drop_duplicates("class")[["class", "train_count", "split"]]
    classes = classes.sort_values(["train_count", "class"], ascending=[False, True], kind="stable")
    return classes.reset_index(drop=True).assign(rank=lambda f: np.arange(len(f)))


def split_spans(order: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(split, left, right) in rank coordinates: the class boundaries between consecutive splits."""
    spans = []
    for split in SPLITS:
        ranks = order.loc[order["split"] == split, "rank"]
        if len(ranks):
            spans.append((split, ranks.min() - 0.5, ranks.max() + 0.5))
    return spans


def class_differences(per_class: pd.DataFrame, metric: str, reference: str) -> pd.DataFrame:
    """Per (method, class): the metric, the reference's, and ``diff`` = method - reference.

    The reference's own rows are left out. Columns method, class, train_count, split, rank,
    value, reference_value, diff.
    """
    require_columns(per_class, ["method", "class", metric], "per_class")
    require_reference(per_class, reference)
    order = class_order(per_class)
    ref = per_class.loc[per_class["method"] == reference, ["class", metric]]
    ref = ref.rename(columns={metric: "reference_value"})
    others = per_class.loc[per_class["method"] != reference, ["method", "class", metric]]
    merged = others.rename(columns={metric: "value"}).merge(ref, on="class").merge(order, on="class")
    merged["diff"] = merged["value"] - merged["reference_value"]
    columns = ["method", "class", "train_count", "split", "rank", "value", "reference_value", "diff"]
    return merged[columns].sort_values(["method", "rank"]).reset_index(drop=True)


def paired_decomposition(per_sample: pd.DataFrame, per_class: pd.DataFrame,
                         leave_one_out: dict | None = None) -> Decomposition:
    """One loss's frames as a :class:`~bvkit.decomposition.Decomposition` for the paired
    comparisons (frames built by hand may lack the ``loss``, ``sample`` or ``class_name``
    columns, or name the class ``label``). ``leave_one_out``: the decomposition's
    ``leave_one_out`` (population estimator), so that differences pair training sets too."""
    samples = per_sample
    if "class" not in samples.columns and "label" in samples.columns:
        samples = samples.rename(columns={"label": "class"})
    require_columns(samples, ["method", "class"], "per_sample")
    require_columns(per_class, ["method", "class", "train_count", "split"], "per_class")
    losses = list(pd.unique(samples["loss"])) if "loss" in samples.columns else [""]
    if len(losses) != 1:
        raise BvkitError(f"per_sample frame holds {len(losses)} losses: pick one")
    loss = losses[0]
    if "sample" in samples.columns:
        samples = samples.sort_values(["method", "sample"], kind="stable")
    samples = samples.assign(loss=loss)
    classes = per_class.sort_values(["method", "class"], kind="stable").assign(loss=loss)
    methods = pd.DataFrame({"method": pd.unique(classes["method"]), "loss": loss})
    return Decomposition(samples, classes, methods, leave_one_out=dict(leave_one_out or {}))


def smoothed_differences(
    per_class: pd.DataFrame, metric: str, reference: str, *, per_sample: pd.DataFrame | None = None,
    window: int | None = None, bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
    leave_one_out: dict | None = None,
) -> pd.DataFrame:
    """Moving average of the per-class differences over classes sorted head to tail.

    Columns method, rank, smooth and, when ``per_sample`` is given, smooth_lo / smooth_hi: the
    interval at ``level`` of the same moving average over the paired class-stratified
    resamples of :func:`bvkit.decomposition.compare` (percentile), or, given the population
    estimator's ``leave_one_out`` (``Decomposition.leave_one_out``), over those resamples and
    the training sets left out of both methods together (``combined_interval``).
    """
    diffs = class_differences(per_class, metric, reference)
    order = class_order(per_class)
    window = window or default_window(len(order))
    paired = (paired_decomposition(per_sample, per_class, leave_one_out)
              if per_sample is not None and bootstrap > 0 else None)
    rows = []
    for method, group in diffs.groupby("method", sort=False):
        group = group.sort_values("rank")
        frame = pd.DataFrame({"method": method, "rank": group["rank"].to_numpy(),
                              "smooth": moving_average(group["diff"].to_numpy(), window)})
        if paired is not None:
            replicates = difference_replicates(paired, method, reference, metric,
                                               bootstrap=bootstrap, seed=seed)
            classes = order["class"].to_numpy()
            head_to_tail = moving_average(replicates[:, classes], window)
            jack = difference_leave_one_out(paired, method, reference, metric)
            if jack is None:
                lo, hi = intervals(head_to_tail, level)
            else:
                lo, hi = combined_interval(frame["smooth"].to_numpy(),
                                           moving_average(jack[:, classes], window),
                                           head_to_tail, level)
            frame["smooth_lo"], frame["smooth_hi"] = lo[group["rank"]], hi[group["rank"]]
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


def split_differences_from_samples(
    per_sample: pd.DataFrame, per_class: pd.DataFrame, metrics, reference: str, *,
    bootstrap: int = 1000, seed: int = 0, level: float = 0.95, leave_one_out: dict | None = None,
) -> pd.DataFrame:
    """Per (method, split, metric): diff = method - reference with its paired interval
    diff_lo / diff_hi (:func:`bvkit.decomposition.compare`: over test samples, and over
    training sets given the population estimator's ``leave_one_out``)."""
    comparison = compare(paired_decomposition(per_sample, per_class, leave_one_out), reference,
                         bootstrap=bootstrap, seed=seed, level=level, columns=list(metrics))
    return split_differences_from_comparison(comparison.per_split, metrics)


def split_differences_without_intervals(per_split: pd.DataFrame, metrics, reference: str) -> pd.DataFrame:
    """Point differences per (method, split, metric) from a per_split frame (no intervals)."""
    require_reference(per_split, reference)
    ref = per_split[per_split["method"] == reference].set_index("split")
    rows = []
    for metric in metrics:
        for _, row in per_split[per_split["method"] != reference].iterrows():
            rows.append({"method": row["method"], "split": row["split"], "metric": metric,
                         "diff": row[metric] - ref.loc[row["split"], metric],
                         "diff_lo": np.nan, "diff_hi": np.nan})
    return pd.DataFrame(rows, columns=["method", "split", "metric", "diff", "diff_lo", "diff_hi"])


def split_differences_from_comparison(comparison_per_split: pd.DataFrame, metrics) -> pd.DataFrame:
    """Long form (method, split, metric, diff, diff_lo, diff_hi) of a wide comparison frame
    (one row per method and split, a column per metric holding method - reference, with
    ``<metric>_lo/_hi``), such as ``bvkit.decomposition.compare(...).per_split``."""
    require_columns(comparison_per_split, ["method", "split", *metrics], "comparison")
    rows = []
    for metric in metrics:
        part = comparison_per_split[["method", "split", metric]].rename(columns={metric: "diff"})
        part.insert(2, "metric", metric)
        for bound in ("lo", "hi"):
            column = f"{metric}_{bound}"
            part[f"diff_{bound}"] = comparison_per_split[column] if column in comparison_per_split else np.nan
        rows.append(part)
    return pd.concat(rows, ignore_index=True)
