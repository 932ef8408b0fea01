"""Figures along training: the runs' training and validation accuracy per epoch, and bias and
variance per shot split at the test snapshots' epochs."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bvkit.data.profiles import SPLITS_WITH_ALL
from bvkit.errors import BvkitError
from bvkit.report.differences import require_columns
from bvkit.report.figures.drawing import method_legend, new_figure, paper_style
from bvkit.report.style import PAGE_WIDTH, method_order, method_palette


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
    fig = new_figure(width, height)
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
    method_legend(fig, methods, palette, ncols=min(len(methods), 6))
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
    fig = new_figure(width, height)
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
    method_legend(fig, methods, palette, ncols=min(len(methods), 6))
    return fig
