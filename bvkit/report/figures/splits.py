"""Figure 4 (each metric per shot split) and the experts' figures: the share of samples routed
to 1..n experts (figure 5) and their bias-variance-diversity decomposition, per shot split."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bvkit.errors import BvkitError
from bvkit.report.differences import require_columns, select_loss
from bvkit.report.figures.drawing import grouped_bars, method_legend, new_figure, paper_style, present_splits
from bvkit.report.style import (
    COLUMN_WIDTH,
    METRIC_LABELS,
    PAGE_WIDTH,
    SPLIT_LABELS,
    method_order,
    method_palette,
)


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
    splits = present_splits(per_split, metrics[0])
    fig = new_figure(width, height)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics):
        grouped_bars(ax, per_split, metric, f"{metric}_lo", f"{metric}_hi", methods, palette,
                      metric, splits)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    method_legend(fig, methods, palette, ncols=6, bars=True)
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
    fig = new_figure(width, height)
    axes = np.atleast_1d(fig.subplots(1, len(methods), sharey=True))
    for ax, method in zip(axes, methods):
        rows = summary[summary["method"] == method]
        splits = present_splits(rows)
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
    splits = present_splits(frame, EXPERT_PANELS[0])
    fig = new_figure(width, height)
    axes = fig.subplots(1, len(EXPERT_PANELS))
    for ax, letter, column in zip(axes, "abcd", EXPERT_PANELS):
        grouped_bars(ax, frame, column, f"{column}_lo", f"{column}_hi", methods, palette,
                      column, splits)
        ax.set_title(f"({letter}) {METRIC_LABELS[column]}", loc="left")
        ax.set_ylabel("")  # the title names it
    shown = str(frame["loss"].iloc[0]) if "loss" in frame else "loss"
    fig.suptitle(f"{shown}: ensemble loss = average bias + average variance − diversity",
                 fontsize=8)
    method_legend(fig, methods, palette, ncols=6, bars=True)
    return fig
