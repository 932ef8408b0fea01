"""``bvkit figures DIR``, ``bvkit table DIR`` and ``bvkit report DIR`` over a study directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bvkit.errors import BvkitError

FIGURE_FORMATS = ("png", "pdf", "svg")
LOSS_CHOICES = ("squared", "zero-one", "cross-entropy")


def register(subparsers) -> None:
    figures = subparsers.add_parser(
        "figures", help="render a study's figures into DIR/figures/",
        description="Writes DIR/figures/accuracy_difference, bias, variance, splits and "
                    "expert_usage (routed RIDE runs only): per-class accuracy / bias / variance "
                    "vs the reference, per-split bars with intervals, expert assignment.")
    _study_arguments(figures)
    figures.add_argument("--format", default="png", metavar="FMT[,FMT]",
                         help="comma-separated: png, pdf, svg (default png)")
    figures.add_argument("--window", type=int, metavar="K",
                         help="moving-average window over sorted classes (default: ~C/10, odd)")
    figures.set_defaults(func=run_figures)

    table = subparsers.add_parser(
        "table", help="print and write a study's tables into DIR/tables/",
        description="The accuracy table (from DIR/metrics.csv) and the key-insights table "
                    "(verdicts from bootstrap intervals of the difference to the reference).")
    _study_arguments(table)
    table.add_argument("--format", default="markdown", choices=("markdown", "csv", "latex"))
    table.set_defaults(func=run_table)

    report = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a study",
        description="One HTML page with every table and figure embedded (no external files).")
    _study_arguments(report)
    report.add_argument("--out", type=Path, metavar="FILE", help="default: DIR/report.html")
    report.add_argument("--window", type=int, metavar="K",
                        help="moving-average window over sorted classes (default: ~C/10, odd)")
    report.set_defaults(func=run_report)


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="study directory")
    parser.add_argument("--reference", default="ce", metavar="METHOD",
                        help="method the others are compared to (default ce)")
    parser.add_argument("--loss", default="squared", choices=LOSS_CHOICES,
                        help="decomposition (default squared)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                        help="bootstrap resamples for intervals (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--many", type=int, default=100, help="many-shot: > this many images")
    parser.add_argument("--few", type=int, default=20, help="few-shot: < this many images")


def _load(args):
    from bvkit.report.study import load_study

    if args.bootstrap < 1:
        raise BvkitError("--bootstrap must be at least 1 (intervals and verdicts need it)")
    return load_study(args.directory, loss=args.loss, reference=args.reference,
                      bootstrap=args.bootstrap, seed=args.seed, many=args.many, few=args.few)


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if not formats or unknown:
        raise BvkitError(f"unknown figure format {', '.join(unknown) or repr(text)} "
                         f"(choose from {', '.join(FIGURE_FORMATS)})")
    return formats


def make_figures(study, *, bootstrap: int, seed: int, window: int | None = None) -> tuple[dict, list[str]]:
    """name -> Figure for a loaded study, and notes on figures left out."""
    from bvkit.report import figures
    from bvkit.report.style import method_palette

    palette = method_palette(study.methods, study.reference)
    common = dict(per_sample=study.per_sample, window=window, bootstrap=bootstrap, seed=seed,
                  palette=palette)
    made = {"accuracy_difference": figures.plot_class_difference(
        study.per_class, "accuracy", study.reference, **common)}
    for metric in ("bias", "variance"):
        made[metric] = figures.plot_metric_overview(
            study.per_class, study.per_split, metric, study.reference,
            split_differences=study.split_differences, **common)
    made["splits"] = figures.plot_split_bars(study.per_split, reference=study.reference,
                                             palette=palette)
    notes = []
    if study.expert_usage is not None:
        made["expert_usage"] = figures.plot_expert_usage(study.expert_usage)
    else:
        notes.append("expert usage: no routed RIDE runs (no expert_usage.csv); figure skipped")
    return made, notes


def make_tables(study) -> tuple[dict, dict, list[str]]:
    """(numeric tables, display tables, notes): accuracy (when metrics.csv exists), insights."""
    from bvkit.report import tables

    numeric, shown, notes = {}, {}, []
    if study.metrics is not None:
        numeric["accuracy"] = tables.accuracy_table(study.metrics, study.reference)
        shown["accuracy"] = tables.format_accuracy_table(numeric["accuracy"], study.reference)
    else:
        notes.append("accuracy table: no metrics.csv in the study directory; table skipped")
    numeric["insights"] = tables.key_insights(study.split_differences, study.reference)
    for split, side in tables.INSIGHT_SPLITS.items():
        if split not in set(numeric["insights"]["split"]):
            notes.append(f"key insights: the {split}-shot split has no classes; {side} columns left out")
    shown["insights"] = tables.format_key_insights(numeric["insights"])
    return numeric, shown, notes


TABLE_TITLES = {
    "accuracy": "Accuracy (%): mean ± std over runs; MFLOPs with the factor vs the reference",
    "insights": "Key insights: many-shot (head) and few-shot (tail) vs the reference "
                "(Comparable when the bootstrap interval of the difference covers 0; "
                "lower bias / variance is better)",
}


def run_figures(args: argparse.Namespace) -> int:
    from bvkit.report.figures import save_figure

    formats = _formats(args.format)
    study = _load(args)
    made, notes = make_figures(study, bootstrap=args.bootstrap, seed=args.seed, window=args.window)
    out = study.directory / "figures"
    out.mkdir(exist_ok=True)
    for name, fig in made.items():
        for path in save_figure(fig, out / name, formats):
            print(path)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def run_table(args: argparse.Namespace) -> int:
    from bvkit.report import tables

    study = _load(args)
    numeric, shown, notes = make_tables(study)
    out = study.directory / "tables"
    out.mkdir(exist_ok=True)
    chosen = numeric if args.format == "csv" else shown
    for name, frame in chosen.items():
        path = tables.write_table(frame, out / name, args.format)
        print(f"{TABLE_TITLES[name]} [{path}]\n")
        print(tables.render_table(frame, args.format))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from bvkit.report.html import Section, render_report

    study = _load(args)
    made, figure_notes = make_figures(study, bootstrap=args.bootstrap, seed=args.seed,
                                      window=args.window)
    _, shown, table_notes = make_tables(study)
    ref, loss = study.reference, study.loss
    sections = [
        Section("Tables", tables=[(TABLE_TITLES[name], frame) for name, frame in shown.items()],
                notes=table_notes),
        Section("Accuracy vs the reference", figures=[(
            f"Per-class accuracy minus {ref}, classes sorted by training count; moving average "
            f"with its bootstrap band", made["accuracy_difference"])]),
        Section(f"Bias ({loss} loss)", figures=[(
            f"(a) per-class bias, (b) change vs {ref} per class, (c) per split with bootstrap "
            f"intervals", made["bias"])]),
        Section(f"Variance ({loss} loss)", figures=[(
            f"(a) per-class variance, (b) change vs {ref} per class, (c) per split with "
            f"bootstrap intervals", made["variance"])]),
        Section("Per split", figures=[("Accuracy, bias and variance per shot split with "
                                       "bootstrap intervals", made["splits"])]),
        Section("Expert assignment", notes=figure_notes, figures=[
            ("Share of samples routed to 1..n experts per shot split", made["expert_usage"])]
            if "expert_usage" in made else []),
    ]
    subtitle = (f"{study.directory.resolve().name}: {len(study.methods)} methods "
                f"({', '.join(study.methods)}), {loss} decomposition, reference {ref}, "
                f"{args.bootstrap} bootstrap resamples (seed {args.seed}).")
    page = render_report(f"bvkit report: {study.directory.resolve().name}", sections,
                         subtitle=subtitle)
    out = args.out or study.directory / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(out)
    return 0
