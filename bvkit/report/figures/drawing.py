"""What every figure shares: a bare Figure under the paper rc, the shot-split spans of a
class axis, the legend, seaborn lines per method and grouped bars per split with their
intervals, and ``save_figure``."""

from __future__ import annotations

import functools

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from bvkit.data.profiles import SPLITS_WITH_ALL
from bvkit.report.differences import split_spans
from bvkit.report.style import PAPER_RC, SPLIT_LABELS, SPLIT_SHADES, metric_scale

CLASS_AXIS_LABEL = "class rank by training count"


def new_figure(width: float, height: float) -> Figure:
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


def diff_label(metric: str, reference: str) -> str:
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


def method_legend(fig: Figure, methods, palette, ncols: int | None = None, bars: bool = False) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if bars:
        handles = [Patch(color=palette[m]) for m in methods]
    else:
        handles = [Line2D([], [], color=palette[m], marker="o", linewidth=1.2) for m in methods]
    fig.legend(handles, list(methods), loc="outside lower center", frameon=False,
               ncols=ncols or min(len(methods), 5), handlelength=1.5, columnspacing=1.0)


def hue_lines(ax, frame: pd.DataFrame, methods, palette: dict, kind: str, **style) -> None:
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


def grouped_bars(ax, frame: pd.DataFrame, value: str, lo: str | None, hi: str | None,
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


def present_splits(frame: pd.DataFrame, value: str | None = None) -> list[str]:
    """Splits with at least one value (a split without classes has NaN rows)."""
    rows = frame if value is None else frame[frame[value].notna()]
    present = set(rows["split"])
    return [s for s in SPLITS_WITH_ALL if s in present]


def save_figure(fig: Figure, stem, formats=("png",), dpi: int = 200) -> list:
    """Write ``stem.<format>`` for each format; returns the paths written."""
    from pathlib import Path

    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        fig.savefig(path, dpi=dpi, format=fmt)
        paths.append(path)
    return paths
