"""``bvkit study run|status`` and ``bvkit demo``."""

from __future__ import annotations

import os
import sys
import time
from importlib import resources
from pathlib import Path

from bvkit.errors import BvkitError

DEMO_PRESET = "demo.toml"
# bootstrap resamples for the demo's intervals: enough for verdicts, quick on two cores
DEMO_BOOTSTRAP = 200


def register(subparsers) -> None:
    study = subparsers.add_parser("study", help="run a study (methods x training subsets) and check on it")
    actions = study.add_subparsers(dest="study_command", metavar="ACTION")
    study.set_defaults(func=lambda args: _help(study))

    run = actions.add_parser(
        "run", help="train every missing run of SPEC into DIR, then gather predictions",
        description="Each (method, subset) run has a content-addressed id; finished runs are kept and "
                    "skipped, so rerunning the same command resumes an interrupted study, and two "
                    "processes on one DIR share its runs.",
        epilog="Testing hook: BVKIT_STUDY_RUNNER=module:function replaces the trainer "
               "(bvkit.study.runner:train_subset) with a function of the same signature.")
    run.add_argument("spec", help="study spec (.toml)")
    run.add_argument("--out", required=True, help="study directory (created; rerun the same command to resume)")
    run.add_argument("--pack", choices=("auto", "always", "never"), default=None,
                     help="train runs of one method that differ only by subset/seed packed into one network "
                          "(auto: on CUDA only; default: the spec's [train] pack, else auto)")
    run.add_argument("--pack-size", type=int, default=None,
                     help="runs per pack (default: the spec's [train] pack_size, else 8)")
    _add_dispatch_options(run)
    run.set_defaults(func=_run)

    status = actions.add_parser("status", help="table of the runs of a study directory")
    status.add_argument("dir", help="study directory")
    status.set_defaults(func=_status)

    demo = subparsers.add_parser("demo", help="a small study on synthetic-lt, decomposed and reported (a few minutes)")
    demo.add_argument("--out", default="bvkit-demo", help="study directory (default ./bvkit-demo)")
    _add_dispatch_options(demo, default_jobs=min(2, os.cpu_count() or 1))
    demo.set_defaults(func=_demo)


def _add_dispatch_options(parser, default_jobs: int = 1) -> None:
    parser.add_argument("--jobs", "-j", type=int, default=default_jobs,
                        help=f"runs in parallel (default {default_jobs})")
    parser.add_argument("--backend", choices=("loky", "dask", "ray"), default="loky",
                        help="loky: processes here; dask: a dask.distributed cluster; ray: a Ray cluster")
    parser.add_argument("--scheduler",
                        help="Dask scheduler (or Ray) address; default: a local cluster with --jobs workers")


def _help(parser) -> int:
    parser.print_help()
    return 2


def _run(args) -> int:
    from bvkit.study.runner import run_study

    counts = run_study(args.spec, args.out, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler,
                       pack=args.pack, pack_size=args.pack_size)
    if counts.get("failed"):
        print(f"bvkit: {counts['failed']} run(s) failed; `bvkit study status {args.out}` shows why, "
              "and the same command retries them", file=sys.stderr)
        return 1
    return 0


def _status(args) -> int:
    print(status_table(args.dir))
    return 0


def status_table(study_dir: str | Path) -> str:
    """A text table of every run of the study (done / failed / running / pending) and a summary."""
    import pandas as pd

    from bvkit.study.results import metric_row
    from bvkit.study.runner import planned_runs

    spec, tasks = planned_runs(study_dir)
    rows = [metric_row(task, Path(study_dir)) for task in tasks]
    frame = pd.DataFrame(rows)
    shown = frame[["method", "subset", "seed", "status", "seconds", "all", "run_id"]].copy()
    shown["seconds"] = shown["seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    shown["all"] = shown["all"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    shown = shown.rename(columns={"all": "accuracy"})
    counts = frame["status"].value_counts()
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "running", "failed", "pending") if counts.get(s, 0))
    lines = [f"{spec.name}: {len(frame)} runs: {summary}", shown.to_string(index=False)]
    for row in rows:
        if row["status"] == "failed":
            lines.append(f"failed {row['method']} subset {row['subset']} ({row['run_id']}): {row['error']}")
    return "\n".join(lines)


def demo_spec_path() -> Path:
    """The demo spec shipped inside the package (experiments/demo.toml is the same file)."""
    return Path(str(resources.files("bvkit.study") / "presets" / DEMO_PRESET))


def _demo(args) -> int:
    from bvkit.study.runner import run_study

    start = time.perf_counter()
    out = Path(args.out)
    counts = run_study(demo_spec_path(), out, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler)
    if counts.get("failed"):
        raise BvkitError(f"{counts['failed']} demo run(s) failed; `bvkit study status {out}` shows why")
    written = _report(out)
    print(f"\nbvkit demo finished in {time.perf_counter() - start:.0f} s; everything is in {out}/:")
    for path, what in [(out / "metrics.csv", "one row per run: accuracy per split, MFLOPs, seconds"),
                       (out / "predictions", "per-method logits (D, N, C), what `bvkit decompose` reads"),
                       (out / "expert_usage.csv", "share of test samples routed to 1..n experts"),
                       *written]:
        if path.exists():
            print(f"  {path}  {what}")
    print(f"Next: `bvkit report {out}` (one HTML page), `bvkit decompose {out} --loss all`, "
          f"`bvkit study status {out}`; rerunning `bvkit demo --out {out}` retrains nothing.")
    return 0


def _report(out: Path) -> list[tuple[Path, str]]:
    """Decompose the study, print the per-split and summary tables, write tables and figures."""
    import pandas as pd

    from bvkit.report import load_study, save_figure, tables, write_table
    from bvkit.report.commands import make_figures, make_tables

    study = load_study(out, loss="squared", reference="ce", bootstrap=DEMO_BOOTSTRAP, seed=0)
    per_split = study.per_split.pivot_table(index="method", columns="split", values=["accuracy", "bias", "variance"],
                                            sort=False)
    with pd.option_context("display.width", 120):
        print("\nSquared-loss decomposition per shot split (mean over classes):")
        print(per_split.round(3).to_string())
        (out / "tables").mkdir(exist_ok=True)
        _, shown, notes = make_tables(study)
        for name, frame in shown.items():
            write_table(frame, out / "tables" / name, "markdown")
            print(f"\n{name}:\n{tables.render_table(frame, 'markdown')}")
    study.per_split.to_csv(out / "tables" / "per_split.csv", index=False)
    study.per_class.to_csv(out / "tables" / "per_class.csv", index=False)
    made, figure_notes = make_figures(study, bootstrap=DEMO_BOOTSTRAP, seed=0)
    (out / "figures").mkdir(exist_ok=True)
    for name, figure in made.items():
        save_figure(figure, out / "figures" / name, ["png"])
    for note in notes + figure_notes:
        print(f"note: {note}")
    return [(out / "tables", "per_split.csv, per_class.csv, accuracy and key-insights tables (markdown)"),
            (out / "figures", f"{', '.join(f'{name}.png' for name in made)}")]
