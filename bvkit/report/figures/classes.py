"""Figures 1 to 3: per-class values of each method head to tail, their change against the
reference with a smoothed band, and (figures 2 and 3) the change per split."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from bvkit.report.differences import (
    class_differences,
    class_order,
    require_columns,
    require_reference,
    select_loss,
    smoothed_differences,
    split_differences_from_samples,
    split_differences_without_intervals,
)
from bvkit.report.figures.drawing import (
    CLASS_AXIS_LABEL,
    add_split_bands,
    diff_label,
    grouped_bars,
    hue_lines,
    method_legend,
    new_figure,
    paper_style,
    present_splits,
)
from bvkit.report.smoothing import default_window, moving_average
from bvkit.report.style import (
    COLUMN_WIDTH,
    METRIC_LABELS,
    PAGE_WIDTH,
    method_order,
    method_palette,
    metric_scale,
)


def draw_class_difference(
    ax, per_class: pd.DataFrame, metric: str, reference: str, palette: dict, *,
    per_sample: pd.DataFrame | None = None, window: int | None = None, bootstrap: int = 1000,
    seed: int = 0, points: bool = True, leave_one_out: dict | None = None,
) -> list[str]:
    """Per-class (method - reference) points, their moving average and its band (over test
    samples; and over training sets given the population estimator's ``leave_one_out``)."""
    order = class_order(per_class)
    diffs = class_differences(per_class, metric, reference)
    smooth = smoothed_differences(per_class, metric, reference, per_sample=per_sample,
                                  window=window, bootstrap=bootstrap, seed=seed,
                                  leave_one_out=leave_one_out)
    scale = metric_scale(metric)
    add_split_bands(ax, order)
    ax.axhline(0.0, color="#333333", linewidth=0.6, zorder=1)
    methods = [m for m in method_order(diffs["method"], reference) if m != reference]
    if points:
        hue_lines(ax, diffs.assign(y=diffs["diff"] * scale), methods, palette, "classes",
                   linestyle="none", marker="o", markersize=3.2, markeredgewidth=0, alpha=0.45,
                   zorder=2)
    if "smooth_lo" in smooth:
        for method in methods:
            curve = smooth[smooth["method"] == method].sort_values("rank")
            band = ax.fill_between(curve["rank"], curve["smooth_lo"] * scale,
                                   curve["smooth_hi"] * scale, color=palette[method], alpha=0.2,
                                   linewidth=0, zorder=2)
            band.set_gid(f"band:{method}")
    hue_lines(ax, smooth.assign(y=smooth["smooth"] * scale), methods, palette, "smooth",
               zorder=3)
    ax.set_xlabel(CLASS_AXIS_LABEL)
    ax.set_ylabel(diff_label(metric, reference))
    return methods


@paper_style
def plot_class_difference(
    per_class: pd.DataFrame, metric: str = "accuracy", reference: str = "ce", *,
    per_sample: pd.DataFrame | None = None, loss: str | None = None, window: int | None = None,
    bootstrap: int = 1000, seed: int = 0, palette: dict | None = None,
    width: float = COLUMN_WIDTH, height: float = 2.6, leave_one_out: dict | None = None,
) -> Figure:
    """Figure 1: per-class metric of each method minus the reference, head to tail, with the
    many / medium / few spans, a moving average and (given ``per_sample``) its band: over the
    test samples, and over the training sets too given the population estimator's
    ``leave_one_out`` (``Decomposition.leave_one_out``)."""
    per_class = select_loss(per_class, loss)
    per_sample = None if per_sample is None else select_loss(per_sample, loss)
    palette = palette or method_palette(per_class["method"], reference)
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    methods = draw_class_difference(ax, per_class, metric, reference, palette,
                                    per_sample=per_sample, window=window, bootstrap=bootstrap,
                                    seed=seed, leave_one_out=leave_one_out)
    method_legend(fig, methods, palette, ncols=min(len(methods), 3))
    return fig


def _draw_class_values(ax, per_class: pd.DataFrame, metric: str, reference: str, palette: dict,
                       window: int | None) -> None:
    """Per-class metric of every method (points) and its moving average (line)."""
    require_columns(per_class, ["method", "class", metric], "per_class")
    order = class_order(per_class)
    window = window or default_window(len(order))
    scale = metric_scale(metric)
    add_split_bands(ax, order)
    methods = method_order(per_class["method"], reference)
    values = (per_class[["method", "class", metric]].merge(order[["class", "rank"]], on="class")
              .sort_values(["method", "rank"]))
    values["y"] = values[metric].to_numpy(float) * scale
    values["smooth"] = values.groupby("method", sort=False)["y"].transform(
        lambda y: moving_average(y.to_numpy(), window))
    hue_lines(ax, values, methods, palette, "classes", linestyle="none", marker="o",
               markersize=2.8, markeredgewidth=0, alpha=0.35, zorder=2)
    hue_lines(ax, values.assign(y=values["smooth"]), methods, palette, "smooth", zorder=3)
    ax.set_xlabel(CLASS_AXIS_LABEL)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))


@paper_style
def plot_metric_overview(
    per_class: pd.DataFrame, per_split: pd.DataFrame, metric: str = "bias", reference: str = "ce", *,
    split_differences: pd.DataFrame | None = None, per_sample: pd.DataFrame | None = None,
    loss: str | None = None, window: int | None = None, bootstrap: int = 1000, seed: int = 0,
    palette: dict | None = None, width: float = PAGE_WIDTH, height: float = 2.5,
    leave_one_out: dict | None = None,
) -> Figure:
    """Figures 2 and 3: (a) per-class metric of each method, (b) its change vs the reference
    per class with a smoothed band, (c) the change per split with intervals (bands and
    intervals over test samples, and over training sets too given ``leave_one_out``).

    ``split_differences`` (columns method, split, metric, diff, diff_lo, diff_hi, e.g. from
    :func:`bvkit.decomposition.compare`) gives panel (c)'s intervals; without it they are
    bootstrapped from ``per_sample`` (the same engine), or drawn without intervals when neither
    is given.
    """
    per_class = select_loss(per_class, loss)
    per_split = select_loss(per_split, loss)
    per_sample = None if per_sample is None else select_loss(per_sample, loss)
    require_reference(per_class, reference)
    palette = palette or method_palette(per_class["method"], reference)
    if split_differences is None:
        if per_sample is not None and bootstrap > 0:
            split_differences = split_differences_from_samples(
                per_sample, per_class, [metric], reference, bootstrap=bootstrap, seed=seed,
                leave_one_out=leave_one_out)
        else:
            split_differences = split_differences_without_intervals(per_split, [metric], reference)
    split_differences = split_differences[split_differences["metric"] == metric]

    fig = new_figure(width, height)
    axes = fig.subplots(1, 3, width_ratios=[1.9, 1.9, 1.5])
    _draw_class_values(axes[0], per_class, metric, reference, palette, window)
    axes[0].set_title(f"(a) per-class {metric}", loc="left", pad=12)
    methods = draw_class_difference(axes[1], per_class, metric, reference, palette,
                                    per_sample=per_sample, window=window, bootstrap=bootstrap,
                                    seed=seed, leave_one_out=leave_one_out)
    axes[1].set_title(f"(b) change vs {reference}", loc="left", pad=12)
    grouped_bars(axes[2], split_differences, "diff", "diff_lo", "diff_hi", methods, palette,
                  metric, present_splits(split_differences, "diff"))
    axes[2].set_ylabel(diff_label(metric, reference))
    axes[2].set_title("(c) per split", loc="left", pad=12)
    method_legend(fig, method_order(per_class["method"], reference), palette, ncols=6)
    return fig
