"""``bvkit figures DIR``, ``bvkit table DIR`` and ``bvkit report DIR`` over a study directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bvkit.data.profiles import add_split_options
from bvkit.decomposition.population import ESTIMATORS
from bvkit.decomposition.terms import LOSSES
from bvkit.errors import BvkitError

FIGURE_FORMATS = ("png", "pdf", "svg")
LOSS_CHOICES = LOSSES


def register(subparsers) -> None:
    figures = subparsers.add_parser(
        "figures", help="render a study's figures into DIR/figures/",
        description="Writes DIR/figures/accuracy_difference, bias, variance, splits, "
                    "expert_usage (routed RIDE runs only), experts (methods with expert "
                    "logits) and training_curves (runs with a history.csv): per-class accuracy "
                    "/ bias / variance vs the reference, per-split bars with intervals, expert "
                    "assignment, the experts' bias-variance-diversity decomposition "
                    "(cross-entropy), accuracy per epoch.")
    _study_arguments(figures)
    figures.add_argument("--format", default="png", metavar="FMT[,FMT]",
                         help="comma-separated: png, pdf, svg (default png)")
    figures.add_argument("--window", type=int, metavar="K",
                         help="moving-average window over sorted classes (default: ~C/10, odd)")
    figures.set_defaults(func=figures_command)

    table = subparsers.add_parser(
        "table", help="print and write a study's tables into DIR/tables/",
        description="The accuracy table (split accuracies from the decomposition of the "
                    "predictions, MFLOPs from DIR/metrics.csv), the key-insights table "
                    "(verdicts from intervals of the difference to the reference) and "
                    "the slides' claims, each holds / fails / inconclusive (docs/claims.md); "
                    "--format latex writes booktabs tables for a paper.")
    _study_arguments(table)
    table.add_argument("--format", default="markdown", choices=("markdown", "csv", "latex"))
    table.set_defaults(func=table_command)

    report = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a study",
        description="One HTML page with every table and figure embedded (no external files).")
    _study_arguments(report)
    report.add_argument("--out", type=Path, metavar="FILE", help="default: DIR/report.html")
    report.add_argument("--window", type=int, metavar="K",
                        help="moving-average window over sorted classes (default: ~C/10, odd)")
    report.set_defaults(func=report_command)


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="study directory")
    parser.add_argument("--reference", default="ce", metavar="METHOD",
                        help="method the others are compared to (default ce)")
    parser.add_argument("--loss", default="squared", choices=LOSS_CHOICES,
                        help="decomposition (default squared)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                        help="bootstrap resamples for intervals (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="auto",
                        help="population (finite-D corrected terms, intervals over training "
                             "sets and test samples), plugin (these D models' terms, intervals "
                             "over test samples), auto (default: population when D >= 3)")
    add_split_options(parser)


def _load(args):
    from bvkit.report.study import study_frames

    if args.bootstrap < 1:
        raise BvkitError("--bootstrap must be at least 1 (intervals and verdicts need it)")
    return study_frames(args.directory, loss=args.loss, reference=args.reference,
                        bootstrap=args.bootstrap, seed=args.seed, many=args.many, few=args.few,
                        estimator=args.estimator)


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if not formats or unknown:
        raise BvkitError(f"unknown figure format {', '.join(unknown) or repr(text)} "
                         f"(choose from {', '.join(FIGURE_FORMATS)})")
    return formats


def figures_command(args: argparse.Namespace) -> int:
    from bvkit.report.assembly import make_figures
    from bvkit.report.figures import save_figure

    formats = _formats(args.format)
    frames = _load(args)
    made, notes = make_figures(frames, bootstrap=args.bootstrap, seed=args.seed, window=args.window)
    out = frames.directory / "figures"
    out.mkdir(exist_ok=True)
    for name, fig in made.items():
        for path in save_figure(fig, out / name, formats):
            print(path)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def table_command(args: argparse.Namespace) -> int:
    from bvkit.report.assembly import TABLE_TITLES, make_tables
    from bvkit.report import tables

    frames = _load(args)
    numeric, shown, notes = make_tables(frames, bootstrap=args.bootstrap, seed=args.seed)
    out = frames.directory / "tables"
    out.mkdir(exist_ok=True)
    chosen = numeric if args.format == "csv" else shown
    for name, frame in chosen.items():
        path = tables.write_table(frame, out / name, args.format)
        print(f"{TABLE_TITLES[name]} [{path}]\n")
        print(tables.render_table(frame, args.format))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def report_command(args: argparse.Namespace) -> int:
    from bvkit.report.assembly import make_figures, make_tables, report_page

    frames = _load(args)
    made, figure_notes = make_figures(frames, bootstrap=args.bootstrap, seed=args.seed,
                                      window=args.window)
    _, shown, table_notes = make_tables(frames, bootstrap=args.bootstrap, seed=args.seed)
    page = report_page(frames, made, figure_notes, shown, table_notes, bootstrap=args.bootstrap, seed=args.seed)
    out = args.out or frames.directory / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(out)
    return 0
