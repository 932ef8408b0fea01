"""The paper's figures from tidy decomposition frames; every function returns a matplotlib Figure.

Points, curves and bars are drawn by seaborn from tidy frames (hue = method, one palette per
study); every band and error bar is an interval of the decomposition's one bootstrap engine.

Artists carry ``gid`` tags so their data can be read back (tests do): ``classes:<method>``
(per-class points), ``smooth:<method>`` (moving average), ``band:<method>`` (its bootstrap band),
``split:<split>`` (background span of a shot split), ``bar:<metric>:<method>:<split>``,
``expert:<method>:<split>:<k>`` (share of samples using k experts), ``curve:<metric>:<method>``
and ``run:<metric>:<method>:<subset>`` (training curves); bars also carry
``err:<metric>:<method>:<split>`` on their interval's line.
"""

from __future__ import annotations

import functools

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from bvkit.data.profiles import SPLITS_WITH_ALL
from bvkit.errors import BvkitError
from bvkit.report.differences import (
    class_differences,
    class_order,
    require_columns,
    require_reference,
    select_loss,
    smoothed_differences,
    split_differences_from_samples,
    split_differences_without_intervals,
    split_spans,
)
from bvkit.report.smoothing import default_window, moving_average
from bvkit.report.style import (
    COLUMN_WIDTH,
    METRIC_LABELS,
    PAGE_WIDTH,
    PAPER_RC,
    SPLIT_LABELS,
    SPLIT_SHADES,
    method_order,
    method_palette,
    metric_scale,
)

CLASS_AXIS_LABEL = "class rank by training count"


def _figure(width: float, height: float) -> Figure:
    # A bare Figure, not pyplot: it renders through Agg on save and never opens a window, and
    # a notebook's chosen backend is left alone.
    return Figure(figsize=(width, height), layout="constrained")


def paper_style(plot):
    """Run a plotting function under the paper rc (fonts >= 7 pt); text keeps its size once made."""

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(PAPER_RC):
            return plot(*args, **kwargs)

    return wrapper


def _diff_label(metric: str, reference: str) -> str:
    unit = " (pp)" if metric == "accuracy" else ""
    return f"{metric.replace('_', ' ')} − {reference}{unit}"


def add_split_bands(ax, order: pd.DataFrame, *, labels: bool = True) -> list:
    """Shade the many / medium / few spans of a head-to-tail class axis and name them on top."""
    patches = []
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for split, left, right in split_spans(order):
        patch = ax.axvspan(left, right, color=SPLIT_SHADES[split], zorder=0, linewidth=0)
        patch.set_gid(f"split:{split}")
        patches.append(patch)
        if labels:
            ax.text((left + right) / 2, 1.01, SPLIT_LABELS[split], transform=top, ha="center",
                    va="bottom", fontsize=7, color="#555555")
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # class ranks, never 2.5
    return patches


def _legend(fig: Figure, methods, palette, ncols: int | None = None, bars: bool = False) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if bars:
        handles = [Patch(color=palette[m]) for m in methods]
    else:
        handles = [Line2D([], [], color=palette[m], marker="o", linewidth=1.2) for m in methods]
    fig.legend(handles, list(methods), loc="outside lower center", frameon=False,
               ncols=ncols or min(len(methods), 5), handlelength=1.5, columnspacing=1.0)


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
        _hue_lines(ax, diffs.assign(y=diffs["diff"] * scale), methods, palette, "classes",
                   linestyle="none", marker="o", markersize=3.2, markeredgewidth=0, alpha=0.45,
                   zorder=2)
    if "smooth_lo" in smooth:
        for method in methods:
            curve = smooth[smooth["method"] == method].sort_values("rank")
            band = ax.fill_between(curve["rank"], curve["smooth_lo"] * scale,
                                   curve["smooth_hi"] * scale, color=palette[method], alpha=0.2,
                                   linewidth=0, zorder=2)
            band.set_gid(f"band:{method}")
    _hue_lines(ax, smooth.assign(y=smooth["smooth"] * scale), methods, palette, "smooth",
               zorder=3)
    ax.set_xlabel(CLASS_AXIS_LABEL)
    ax.set_ylabel(_diff_label(metric, reference))
    return methods


def _hue_lines(ax, frame: pd.DataFrame, methods, palette: dict, kind: str, **style) -> None:
    """One seaborn line per method (hue) through ``frame``'s (rank, y), tagged
    ``<kind>:<method>``; NaN values are left out."""
    import seaborn as sns  # imports pyplot (not used: figures are bare Figures); load it late

    data = frame[frame["method"].isin(methods)].dropna(subset=["y"])
    drawn = [m for m in methods if m in set(data["method"])]
    if not drawn:
        return
    before = len(ax.lines)
    sns.lineplot(data, x="rank", y="y", hue="method", hue_order=drawn, palette=palette,
                 estimator=None, errorbar=None, legend=False, ax=ax, **style)
    for line, method in zip(ax.lines[before:], drawn, strict=True):
        line.set_gid(f"{kind}:{method}")


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
    fig = _figure(width, height)
    ax = fig.add_subplot()
    methods = draw_class_difference(ax, per_class, metric, reference, palette,
                                    per_sample=per_sample, window=window, bootstrap=bootstrap,
                                    seed=seed, leave_one_out=leave_one_out)
    _legend(fig, methods, palette, ncols=min(len(methods), 3))
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
    _hue_lines(ax, values, methods, palette, "classes", linestyle="none", marker="o",
               markersize=2.8, markeredgewidth=0, alpha=0.35, zorder=2)
    _hue_lines(ax, values.assign(y=values["smooth"]), methods, palette, "smooth", zorder=3)
    ax.set_xlabel(CLASS_AXIS_LABEL)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))


def _grouped_bars(ax, frame: pd.DataFrame, value: str, lo: str | None, hi: str | None,
                  methods, palette, metric: str, splits) -> None:
    """Bars per split (x) and method (hue, seaborn) with optional [lo, hi] error bars."""
    import seaborn as sns  # imports pyplot (not used: figures are bare Figures); load it late

    scale = metric_scale(metric)
    rows = frame[frame["method"].isin(methods) & frame["split"].isin(splits)
                 & frame[value].notna()]
    rows = rows.assign(height=rows[value].to_numpy(float) * scale)
    before = len(ax.patches)
    if not rows.empty:
        sns.barplot(rows, x="split", y="height", hue="method", order=list(splits),
                    hue_order=list(methods), palette=palette, saturation=1, errorbar=None,
                    legend=False, linewidth=0, zorder=2, ax=ax)
    by_key = rows.set_index(["method", "split"])
    slot = 0.8 / len(methods)  # seaborn's dodge: hue slots of equal width within 0.8
    for patch in ax.patches[before:]:
        x = patch.get_x() + patch.get_width() / 2
        j = int(round(x))
        method, split = methods[int(round((x - j + 0.4) / slot - 0.5))], splits[j]
        patch.set_gid(f"bar:{metric}:{method}:{split}")
        row = by_key.loc[(method, split)]
        if lo and hi and lo in by_key.columns and pd.notna(row[lo]):
            height, low, high = row["height"], row[lo] * scale, row[hi] * scale
            errorbar = ax.errorbar(x, height, yerr=[[height - low], [high - height]],
                                   color="#222222", linewidth=0.7, capsize=1.5, zorder=3)
            errorbar.lines[2][0].set_gid(f"err:{metric}:{method}:{split}")
    ax.set_xticks(range(len(splits)), [SPLIT_LABELS[s] for s in splits])
    ax.set_xlabel("shot split")
    ax.axhline(0.0, color="#333333", linewidth=0.6, zorder=1)


def _present_splits(frame: pd.DataFrame, value: str | None = None) -> list[str]:
    """Splits with at least one value (a split without classes has NaN rows)."""
    rows = frame if value is None else frame[frame[value].notna()]
    present = set(rows["split"])
    return [s for s in SPLITS_WITH_ALL if s in present]


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

    fig = _figure(width, height)
    axes = fig.subplots(1, 3, width_ratios=[1.9, 1.9, 1.5])
    _draw_class_values(axes[0], per_class, metric, reference, palette, window)
    axes[0].set_title(f"(a) per-class {metric}", loc="left", pad=12)
    methods = draw_class_difference(axes[1], per_class, metric, reference, palette,
                                    per_sample=per_sample, window=window, bootstrap=bootstrap,
                                    seed=seed, leave_one_out=leave_one_out)
    axes[1].set_title(f"(b) change vs {reference}", loc="left", pad=12)
    _grouped_bars(axes[2], split_differences, "diff", "diff_lo", "diff_hi", methods, palette,
                  metric, _present_splits(split_differences, "diff"))
    axes[2].set_ylabel(_diff_label(metric, reference))
    axes[2].set_title("(c) per split", loc="left", pad=12)
    _legend(fig, method_order(per_class["method"], reference), palette, ncols=6)
    return fig


@paper_style
def plot_split_bars(
    per_split: pd.DataFrame, metrics=("accuracy", "bias", "variance"), *, reference: str | None = "ce",
    loss: str | None = None, palette: dict | None = None, width: float = PAGE_WIDTH,
    height: float = 2.3,
) -> Figure:
    """Figure 4: per-split bars of each metric for all methods, with ``<metric>_lo/_hi`` intervals
    when the frame has them."""
    per_split = select_loss(per_split, loss)
    require_columns(per_split, ["method", "split", *metrics], "per_split")
    palette = palette or method_palette(per_split["method"], reference)
    methods = method_order(per_split["method"], reference)
    splits = _present_splits(per_split, metrics[0])
    fig = _figure(width, height)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics):
        _grouped_bars(ax, per_split, metric, f"{metric}_lo", f"{metric}_hi", methods, palette,
                      metric, splits)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    _legend(fig, methods, palette, ncols=6, bars=True)
    return fig


def expert_usage_summary(expert_usage: pd.DataFrame) -> pd.DataFrame:
    """Mean (and std over subsets) share of samples per (method, split, n_experts)."""
    require_columns(expert_usage, ["method", "split", "n_experts", "share"], "expert_usage")
    summary = (expert_usage.groupby(["method", "split", "n_experts"], sort=True)["share"]
               .agg(share="mean", share_std="std", n_runs="count").reset_index())
    return summary


@paper_style
def plot_expert_usage(expert_usage: pd.DataFrame, *, width: float | None = None,
                      height: float = 2.3) -> Figure:
    """Figure 5: share of samples routed to 1..n experts per shot split (stacked, one panel per
    routed method; shares averaged over subsets)."""
    summary = expert_usage_summary(expert_usage)
    if summary.empty:
        raise BvkitError("expert usage frame is empty")
    methods = sorted(summary["method"].unique())
    max_experts = int(summary["n_experts"].max())
    colours = matplotlib.colormaps["Blues"](np.linspace(0.35, 0.9, max_experts))
    width = width or (COLUMN_WIDTH if len(methods) == 1 else PAGE_WIDTH)
    fig = _figure(width, height)
    axes = np.atleast_1d(fig.subplots(1, len(methods), sharey=True))
    for ax, method in zip(axes, methods):
        rows = summary[summary["method"] == method]
        splits = _present_splits(rows)
        bottoms = np.zeros(len(splits))
        for k in range(1, max_experts + 1):
            shares = np.array([rows.loc[(rows["split"] == s) & (rows["n_experts"] == k), "share"].sum()
                               for s in splits]) * 100
            bars = ax.bar(range(len(splits)), shares, bottom=bottoms, color=colours[k - 1],
                          width=0.65, label=f"{k} expert{'s' if k > 1 else ''}", linewidth=0)
            for patch, split in zip(bars.patches, splits):
                patch.set_gid(f"expert:{method}:{split}:{k}")
            bottoms += shares
        ax.set_xticks(range(len(splits)), [SPLIT_LABELS[s] for s in splits])
        ax.set_xlabel("shot split")
        ax.set_title(method, loc="left")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("share of samples (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", frameon=False,
               ncols=min(max_experts, 6))
    return fig


EXPERT_PANELS = ("ensemble_loss", "average_bias", "average_variance", "diversity")


@paper_style
def plot_experts(experts_per_split: pd.DataFrame, *, loss: str | None = None,
                 reference: str | None = None, palette: dict | None = None,
                 width: float = PAGE_WIDTH, height: float = 2.3) -> Figure:
    """The experts' bias-variance-diversity decomposition per shot split, one bar per method
    with its ``_lo``/``_hi`` interval: (a) ensemble loss = (b) average bias + (c) average
    variance - (d) diversity. ``experts_per_split``: :func:`bvkit.decomposition.decompose`'s
    ``experts.per_split`` (one loss, or pick it with ``loss``)."""
    frame = select_loss(experts_per_split, loss)
    require_columns(frame, ["method", "split", *EXPERT_PANELS], "experts per_split")
    if frame.empty:
        raise BvkitError("experts per_split frame is empty")
    palette = palette or method_palette(frame["method"], reference)
    methods = method_order(frame["method"], reference)
    splits = _present_splits(frame, EXPERT_PANELS[0])
    fig = _figure(width, height)
    axes = fig.subplots(1, len(EXPERT_PANELS))
    for ax, letter, column in zip(axes, "abcd", EXPERT_PANELS):
        _grouped_bars(ax, frame, column, f"{column}_lo", f"{column}_hi", methods, palette,
                      column, splits)
        ax.set_title(f"({letter}) {METRIC_LABELS[column]}", loc="left")
        ax.set_ylabel("")  # the title names it
    shown = str(frame["loss"].iloc[0]) if "loss" in frame else "loss"
    fig.suptitle(f"{shown}: ensemble loss = average bias + average variance − diversity",
                 fontsize=8)
    _legend(fig, methods, palette, ncols=6, bars=True)
    return fig


CURVE_METRICS = {"accuracy": "training accuracy (%)", "val_accuracy": "validation accuracy (%)"}


@paper_style
def plot_training_curves(histories: pd.DataFrame, *, reference: str | None = None,
                         palette: dict | None = None, width: float = PAGE_WIDTH,
                         height: float = 2.4) -> Figure:
    """Training curves: training and validation accuracy per epoch, counted from the start of
    the model's training, one thin line per run and the mean over runs in bold. A method that
    reuses a stage one (``reused`` rows of :func:`bvkit.study.reader.read_histories`) is drawn
    from where its own stage starts, continuing the stage one's curve; a method without epochs
    of its own (tau-norm's rescaling) has no line. Lines are tagged ``curve:<metric>:<method>``
    (the mean) and ``run:<metric>:<method>:<subset>``."""
    import seaborn as sns  # imports pyplot (not used: figures are bare Figures); load it late

    require_columns(histories, ["method", "subset", "step", "reused"], "histories")
    own = histories[~histories["reused"].astype(bool)]
    if own.empty:
        raise BvkitError("no run has epochs of its own to draw")
    palette = palette or method_palette(histories["method"], reference)
    methods = method_order(own["method"], reference)
    fig = _figure(width, height)
    axes = fig.subplots(1, len(CURVE_METRICS), sharex=True)
    for ax, (metric, label) in zip(axes, CURVE_METRICS.items()):
        ax.set_xlabel("epoch (from the start of the model's training)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric not in own:
            continue
        data = own.dropna(subset=[metric]).assign(y=lambda frame: frame[metric] * 100)
        for method in methods:
            rows = data[data["method"] == method]
            if rows.empty:
                continue
            before = len(ax.lines)
            sns.lineplot(rows, x="step", y="y", units="subset", estimator=None, color=palette[method],
                         linewidth=0.5, alpha=0.35, legend=False, ax=ax)
            for line, subset in zip(ax.lines[before:], sorted(rows["subset"].unique()), strict=True):
                line.set_gid(f"run:{metric}:{method}:{subset}")
            mean = rows.groupby("step", as_index=False)["y"].mean()
            sns.lineplot(mean, x="step", y="y", color=palette[method], linewidth=1.3, legend=False, ax=ax)
            ax.lines[-1].set_gid(f"curve:{metric}:{method}")
    _legend(fig, methods, palette, ncols=min(len(methods), 6))
    return fig


@paper_style
def plot_along_training(along: pd.DataFrame, *, reference: str | None = None, palette: dict | None = None,
                        width: float = PAGE_WIDTH, height: float = 3.6) -> Figure:
    """Bias (top row) and variance (bottom row) per shot split (columns) against the epoch of the
    test snapshots (``bvkit.study.reader.Study.decompose_along_training``: one point per method
    and snapshot epoch, the D models decomposed together). Lines are tagged
    ``along:<term>:<split>:<method>``."""
    require_columns(along, ["method", "epoch", "split", "bias", "variance"], "along_training")
    palette = palette or method_palette(along["method"], reference)
    methods = method_order(along["method"], reference)
    splits = [s for s in SPLITS_WITH_ALL if s in set(along["split"])]
    fig = _figure(width, height)
    axes = fig.subplots(2, len(splits), sharex=True, squeeze=False)
    loss = along["loss"].iloc[0] if "loss" in along else ""
    for row, term in enumerate(("bias", "variance")):
        for col, split in enumerate(splits):
            ax = axes[row][col]
            data = along[along["split"] == split]
            for method in methods:
                rows = data[data["method"] == method].sort_values("epoch")
                if rows.empty:
                    continue
                ax.plot(rows["epoch"].to_numpy(), rows[term].to_numpy(), color=palette[method], marker="o",
                        markersize=3, linewidth=1.2, gid=f"along:{term}:{split}:{method}")
            ax.set_title(f"{split}" if row == 0 else "")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch" if row == 1 else "")
            ax.set_ylabel(f"{term} ({loss})" if col == 0 else "")
    _legend(fig, methods, palette, ncols=min(len(methods), 6))
    return fig


def save_figure(fig: Figure, stem, formats=("png",), dpi: int = 200) -> list:
    """Write ``stem.<format>`` for each format; returns the paths written."""
    from pathlib import Path

    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        fig.savefig(path, dpi=dpi, format=fmt)
        paths.append(path)
    return paths
