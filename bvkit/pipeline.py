"""The whole pipeline on one study: train (``bvkit.study``), decompose, tables, figures.

Above every layer: the study stops at predictions, the report starts from them; this module
joins them for ``bvkit demo`` (``docs/architecture.md``).

    >>> from bvkit.pipeline import run_demo
    >>> written = run_demo("bvkit-demo", jobs=2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from bvkit.errors import BvkitError
from bvkit.report import render_table, save_figure, study_frames, write_table
from bvkit.report.assembly import make_figures, make_tables
from bvkit.study.runner import run_study
from bvkit.study.spec import preset_path

DEMO_PRESET = "demo.toml"
# bootstrap resamples for the demo's intervals: enough for verdicts, quick on two cores
DEMO_BOOTSTRAP = 200


def demo_spec_path() -> Path:
    """The demo spec shipped inside the package (experiments/demo.toml is the same file)."""
    return preset_path(DEMO_PRESET)


def run_demo(out: str | Path, *, jobs: int = 1, backend: str = "loky", scheduler: str | None = None,
             log: Callable[[str], None] = print) -> list[tuple[Path, str]]:
    """Train the demo study into ``out`` (cached runs are kept), then ``report_study`` it;
    returns what was written, as (path, description) pairs."""
    out = Path(out)
    counts = run_study(demo_spec_path(), out, jobs=jobs, backend=backend, scheduler=scheduler, log=log)
    if counts.get("failed"):
        raise BvkitError(f"{counts['failed']} demo run(s) failed; `bvkit study status {out}` shows why")
    return [(out / "metrics.csv", "one row per run: accuracy per split, MFLOPs, seconds"),
            (out / "predictions", "per-method logits (D, N, C), what `bvkit decompose` reads"),
            (out / "expert_usage.csv", "share of test samples routed to 1..n experts"),
            *report_study(out, bootstrap=DEMO_BOOTSTRAP, log=log)]


def report_study(out: str | Path, *, loss: str = "squared", reference: str = "ce", bootstrap: int = 1000,
                 seed: int = 0, log: Callable[[str], None] = print) -> list[tuple[Path, str]]:
    """Decompose the study in ``out``, log the per-split and summary tables, write them to
    ``out/tables/`` and the figures to ``out/figures/``; returns what was written."""
    import pandas as pd

    out = Path(out)
    study = study_frames(out, loss=loss, reference=reference, bootstrap=bootstrap, seed=seed)
    per_split = study.per_split.pivot_table(index="method", columns="split", values=["accuracy", "bias", "variance"],
                                            sort=False)
    with pd.option_context("display.width", 120):
        log(f"\n{loss.capitalize()}-loss decomposition per shot split (mean over classes):")
        log(per_split.round(3).to_string())
        (out / "tables").mkdir(exist_ok=True)
        _, shown, notes = make_tables(study)
        for name, frame in shown.items():
            write_table(frame, out / "tables" / name, "markdown")
            log(f"\n{name}:\n{render_table(frame, 'markdown')}")
    study.per_split.to_csv(out / "tables" / "per_split.csv", index=False)
    study.per_class.to_csv(out / "tables" / "per_class.csv", index=False)
    made, figure_notes = make_figures(study, bootstrap=bootstrap, seed=seed)
    (out / "figures").mkdir(exist_ok=True)
    for name, figure in made.items():
        save_figure(figure, out / "figures" / name, ["png"])
    for note in notes + figure_notes:
        log(f"note: {note}")
    return [(out / "tables", "per_split.csv, per_class.csv, accuracy and key-insights tables (markdown)"),
            (out / "figures", f"{', '.join(f'{name}.png' for name in made)}")]
