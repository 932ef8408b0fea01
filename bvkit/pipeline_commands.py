"""``bvkit demo``: the demo study trained, decomposed and reported (``bvkit.pipeline``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bvkit.study.commands import add_dispatch_options


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="a small study on synthetic-lt, decomposed and reported (a few minutes)")
    demo.add_argument("--out", default="bvkit-demo", help="study directory (default ./bvkit-demo)")
    add_dispatch_options(demo, default_jobs=min(2, os.cpu_count() or 1))
    demo.set_defaults(func=_demo)


def _demo(args) -> int:
    from bvkit.pipeline import run_demo

    start = time.perf_counter()
    out = Path(args.out)
    written = run_demo(out, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler)
    print(f"\nbvkit demo finished in {time.perf_counter() - start:.0f} s; everything is in {out}/:")
    for path, what in written:
        if path.exists():
            print(f"  {path}  {what}")
    print(f"Next: `bvkit report {out}` (one HTML page), `bvkit decompose {out} --loss all`, "
          f"`bvkit study status {out}`; rerunning `bvkit demo --out {out}` retrains nothing.")
    return 0
