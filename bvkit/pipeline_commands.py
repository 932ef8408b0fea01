"""``bvkit demo``: the demo study trained, decomposed and reported (``bvkit.pipeline``)."""

from __future__ import annotations

import time
from pathlib import Path

from bvkit.study.commands import add_dispatch_options


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="a miniature of the paper's study on mini-lt: trained, decomposed, "
                                       "reported, the slides' claims checked (about two minutes)")
    demo.add_argument("--out", default="bvkit-demo", help="study directory (default ./bvkit-demo)")
    add_dispatch_options(demo, default_jobs="auto")
    demo.set_defaults(func=_demo)


def _demo(args) -> int:
    from bvkit.pipeline import demo_spec_path, run_demo
    from bvkit.report.claims import claims_summary
    from bvkit.study.spec import load_spec

    start = time.perf_counter()
    out = Path(args.out)
    result = run_demo(out, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler)
    spec = load_spec(demo_spec_path())
    runs = result.runs
    print(f"\nbvkit demo finished in {time.perf_counter() - start:.0f} s "
          f"({runs.get('ran', 0)} runs trained, {runs.get('cached', 0)} cached): {spec.description}.")
    print(f"Figures: {out / 'figures'}/ (per-class accuracy, bias and variance vs ce, classes "
          f"sorted by training count, many / medium / few bands); tables: {out / 'tables'}/.")
    print(_training_line(out))
    print("The RIDE slides' claims on this study (docs/claims.md; evidence in the claims table):")
    print("\n".join(claims_summary(result.claims)))
    print(f"\nEverything is in {out}/:")
    for path, what in result.written:
        if path.exists():
            print(f"  {path}  {what}")
    print(f"Next: `bvkit report {out}` (one HTML page), `bvkit decompose {out} --loss all`, "
          f"`bvkit study status {out}`; rerunning `bvkit demo --out {out}` retrains nothing.")
    return 0


def _training_line(out: Path) -> str:
    """How far the demo's models trained: epochs and mean final training accuracy per method."""
    import pandas as pd

    metrics = pd.read_csv(out / "metrics.csv")
    accuracy = metrics.groupby("method", sort=False)["train_accuracy"].mean().dropna()
    epochs = sorted({int(e) for e in metrics["epochs"].dropna()})
    shown = ", ".join(f"{method} {value:.2f}" for method, value in accuracy.items())
    return (f"Trained {'/'.join(map(str, epochs))} epochs each (mean final training accuracy: {shown}): as far as "
            "the demo's time allows, short of convergence, so these are a short schedule's verdicts "
            "(docs/subsets.md; for a longer one, raise `epochs` in a copy of experiments/demo.toml, "
            "`bvkit study run` it and `bvkit report` it).")
