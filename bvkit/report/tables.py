"""The paper's tables from tidy frames: accuracy (with MFLOPs) and key insights (verdicts).

The study's tables take their split accuracies from the decomposition (``split_accuracy``), so
they and the figures share one set of shot thresholds (``--many`` / ``--few``).

Numeric frames come first (``accuracy_table``, ``key_insights``); ``format_*`` turn them into
display strings; ``to_markdown`` / ``to_latex`` / ``write_table`` render any frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bvkit.data.profiles import ALL, SPLITS
from bvkit.errors import BvkitError
from bvkit.report.differences import require_columns
from bvkit.report.style import HIGHER_IS_BETTER, method_order

ACCURACY_COLUMNS = (ALL, *SPLITS)
ACCURACY_HEADERS = {"all": "All", "many": "Many", "medium": "Med", "few": "Few"}
INSIGHT_SPLITS = {"many": "Head", "few": "Tail"}
INSIGHT_METRICS = {"accuracy": "Acc", "bias": "Bias", "variance": "Variance"}
FORMATS = ("markdown", "csv", "latex")
EXTENSIONS = {"markdown": "md", "csv": "csv", "latex": "tex"}


def accuracy_table(metrics: pd.DataFrame, reference: str = "ce", *,
                   split_accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per method: mean and std (over subsets / seeds) of All / Many / Med / Few
    accuracy in percent, ``all_delta`` (mean All minus the reference's), mean MFLOPs and its
    factor vs the reference.

    ``split_accuracy``: the decomposition's ``per_model`` frame (method, model, split,
    accuracy), one model per run; when given, the accuracies come from it, with the classes
    and shot thresholds of the figures, and ``metrics`` gives only the MFLOPs. Otherwise they
    come from ``metrics``, a study's metrics.csv (method, status, all, many, medium, few,
    mflops, ...). Only runs whose status is "done" count when there is a status column.
    Accuracies stored as fractions (all values <= 1) are converted to percent.
    """
    require_columns(metrics, ["method"], "metrics")
    runs = metrics
    if "status" in runs.columns:
        runs = runs[runs["status"].astype(str).str.lower() == "done"]
    if split_accuracy is None:
        require_columns(metrics, ["method", *ACCURACY_COLUMNS], "metrics")
        if runs.empty:
            raise BvkitError("metrics hold no finished run (status 'done')")
        accuracies = runs[["method", *ACCURACY_COLUMNS]]
        values = accuracies[list(ACCURACY_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        if np.nanmax(values.to_numpy(float), initial=0.0) <= 1.0:
            values = values * 100.0
    else:
        require_columns(split_accuracy, ["method", "model", "split", "accuracy"], "split accuracy")
        accuracies = (split_accuracy.pivot(index=["method", "model"], columns="split",
                                           values="accuracy")
                      .reindex(columns=list(ACCURACY_COLUMNS)).reset_index())
        values = accuracies[list(ACCURACY_COLUMNS)] * 100.0
    accuracies = accuracies.assign(**{c: values[c] for c in ACCURACY_COLUMNS})
    grouped = accuracies.groupby("method", sort=False)
    table = pd.DataFrame({"n_runs": grouped.size()})
    for column in ACCURACY_COLUMNS:
        table[f"{column}_mean"] = grouped[column].mean()
        table[f"{column}_std"] = grouped[column].std(ddof=1)
    table["all_delta"] = table["all_mean"] - table["all_mean"].get(reference, np.nan)
    if "mflops" in runs.columns:
        table["mflops"] = runs.groupby("method", sort=False)["mflops"].mean().reindex(table.index)
        base = table["mflops"].get(reference, np.nan)
        table["mflops_factor"] = table["mflops"] / base if base and np.isfinite(base) else np.nan
    order = method_order(table.index, reference)
    return table.loc[order].rename_axis("method").reset_index()


def _mean_std(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return "-"
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_accuracy_table(table: pd.DataFrame, reference: str = "ce", digits: int = 1) -> pd.DataFrame:
    """Display strings: Method, MFLOPs ("69.5 (1.0x)"), All / Many / Med / Few ("48.0 ± 0.3"),
    Δ All (vs the reference, "+4.2"), Runs."""
    shown = pd.DataFrame({"Method": table["method"]})
    if "mflops" in table.columns:
        shown["MFLOPs"] = [
            "-" if pd.isna(m) else (f"{m:.1f}" if pd.isna(f) else f"{m:.1f} ({f:.1f}x)")
            for m, f in zip(table["mflops"], table["mflops_factor"])]
    for column in ACCURACY_COLUMNS:
        shown[ACCURACY_HEADERS[column]] = [
            _mean_std(m, s, digits) for m, s in zip(table[f"{column}_mean"], table[f"{column}_std"])]
    shown["Δ All"] = ["-" if pd.isna(d) or m == reference else f"{d:+.{digits}f}"
                      for d, m in zip(table["all_delta"], table["method"])]
    shown["Runs"] = table["n_runs"].astype(int).astype(str)
    return shown.reset_index(drop=True)


def verdict(diff: float, lo: float, hi: float, higher_is_better: bool) -> str:
    """Better / Worse / Comparable vs the reference: Comparable when [lo, hi] covers 0."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise BvkitError("a verdict needs a bootstrap interval of the difference (use --bootstrap)")
    if lo <= 0.0 <= hi:
        return "Comparable"
    improved = diff > 0 if higher_is_better else diff < 0
    return "Better" if improved else "Worse"


def key_insights(split_differences: pd.DataFrame, reference: str = "ce", *,
                 splits=tuple(INSIGHT_SPLITS), metrics=tuple(INSIGHT_METRICS)) -> pd.DataFrame:
    """Tidy verdicts: one row per (method, split, metric) with diff, diff_lo, diff_hi, verdict.

    ``split_differences`` holds method - reference per (method, split, metric) with its
    bootstrap interval. Accuracy is better when higher; bias and variance when lower.
    """
    require_columns(split_differences, ["method", "split", "metric", "diff", "diff_lo", "diff_hi"],
                    "split differences")
    rows = split_differences[split_differences["split"].isin(splits)
                             & split_differences["metric"].isin(metrics)
                             & (split_differences["method"] != reference)
                             & split_differences["diff"].notna()].copy()  # NaN: split has no class
    if rows.empty:
        raise BvkitError("no differences vs the reference for the key-insights table")
    rows["verdict"] = [verdict(d, lo, hi, HIGHER_IS_BETTER.get(m, False))
                       for d, lo, hi, m in zip(rows["diff"], rows["diff_lo"], rows["diff_hi"], rows["metric"])]
    order = {m: i for i, m in enumerate(method_order(rows["method"], reference))}
    rows = rows.assign(_m=rows["method"].map(order), _s=rows["split"].map(list(splits).index),
                       _k=rows["metric"].map(list(metrics).index))
    rows = rows.sort_values(["_m", "_s", "_k"]).drop(columns=["_m", "_s", "_k"])
    return rows[["method", "split", "metric", "diff", "diff_lo", "diff_hi", "verdict"]].reset_index(drop=True)


def format_key_insights(insights: pd.DataFrame) -> pd.DataFrame:
    """The slides' layout: one row per method, columns "Head Acc" ... "Tail Variance"."""
    wide = insights.assign(
        column=[f"{INSIGHT_SPLITS.get(s, s)} {INSIGHT_METRICS.get(m, m)}"
                for s, m in zip(insights["split"], insights["metric"])])
    columns = list(dict.fromkeys(wide["column"]))
    methods = list(dict.fromkeys(wide["method"]))
    table = wide.pivot(index="method", columns="column", values="verdict").loc[methods, columns]
    return table.rename_axis(None, axis=1).rename_axis("Method").reset_index()


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub pipe table (cells' '|' escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def read_markdown(text: str) -> pd.DataFrame:
    """Parse a pipe table written by ``to_markdown`` back into a frame of strings."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2 or not all(line.startswith("|") and line.endswith("|") for line in lines):
        raise BvkitError("not a markdown pipe table")

    def cells(line: str) -> list[str]:
        parts, current, i = [], "", 1
        while i < len(line) - 1:
            if line[i] == "\\" and line[i + 1] == "|":
                current, i = current + "|", i + 2
                continue
            if line[i] == "|":
                parts.append(current.strip())
                current = ""
            else:
                current += line[i]
            i += 1
        return parts + [current.strip()]

    header = cells(lines[0])
    return pd.DataFrame([cells(line) for line in lines[2:]], columns=header)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$"}


def _latex_escape(value) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(value))


def to_latex(frame: pd.DataFrame) -> str:
    """A booktabs tabular (first column left-aligned, the rest right-aligned)."""
    spec = "l" + "r" * (len(frame.columns) - 1)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_table(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "markdown":
        return to_markdown(frame)
    if fmt == "latex":
        return to_latex(frame)
    if fmt == "csv":
        return frame.to_csv(index=False)
    raise BvkitError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")


def write_table(frame: pd.DataFrame, stem, fmt: str) -> Path:
    """Write ``stem.md`` / ``stem.csv`` / ``stem.tex``; returns the path."""
    path = Path(f"{stem}.{EXTENSIONS.get(fmt, fmt)}")
    path.write_text(render_table(frame, fmt), encoding="utf-8")
    return path
