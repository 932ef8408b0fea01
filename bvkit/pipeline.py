"""The whole pipeline on one study: train (``bvkit.study``), decompose, tables, figures.

Above every layer: the study stops at predictions, the report starts from them; this module
joins them for ``bvkit demo`` (``docs/architecture.md``).

    >>> from bvkit.pipeline import run_demo
    >>> result = run_demo("bvkit-demo", jobs=2)   # result.written, result.claims
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bvkit.errors import BvkitError
from bvkit.report import render_table, save_figure, study_frames, write_table
from bvkit.report.assembly import TABLE_TITLES, make_figures, make_tables
from bvkit.study.runner import run_study
from bvkit.study.spec import preset_path

if TYPE_CHECKING:
    import pandas as pd

DEMO_PRESET = "demo.toml"
# bootstrap resamples for the demo's intervals and claims: enough for verdicts, quick on 2 cores
DEMO_BOOTSTRAP = 200


def demo_spec_path() -> Path:
    """The demo spec shipped inside the package (experiments/demo.toml is the same file)."""
    return preset_path(DEMO_PRESET)


@dataclass
class DemoResult:
    """What ``run_demo`` wrote, as (path, description) pairs, and the claims table."""

    written: list[tuple[Path, str]]
    claims: "pd.DataFrame"
    runs: dict  # counts of the study's runs: trained, cached, failed


def run_demo(out: str | Path, *, jobs: int | str = 1, backend: str = "loky", scheduler: str | None = None,
             log: Callable[[str], None] = print) -> DemoResult:
    """Train the demo study into ``out`` (cached runs are kept), then ``report_study`` it."""
    out = Path(out)
    counts = run_study(demo_spec_path(), out, jobs=jobs, backend=backend, scheduler=scheduler, log=log)
    if counts.get("failed"):
        raise BvkitError(f"{counts['failed']} demo run(s) failed; `bvkit study status {out}` shows why")
    written, claims = report_study(out, bootstrap=DEMO_BOOTSTRAP, log=log)
    return DemoResult([(out / "metrics.csv", "one row per run: accuracy per split, training "
                                             "accuracy, epochs, MFLOPs, seconds"),
                       (out / "predictions", "per-method logits (D, N, C), what `bvkit decompose` reads"),
                       (out / "expert_usage.csv", "share of test samples routed to 1..n experts"),
                       *written], claims, counts)


def report_study(out: str | Path, *, loss: str = "squared", reference: str = "ce", bootstrap: int = 1000,
                 seed: int = 0, log: Callable[[str], None] = print
                 ) -> tuple[list[tuple[Path, str]], "pd.DataFrame"]:
    """Decompose the study in ``out``, log the per-split, summary and claims tables, write them
    to ``out/tables/`` and the figures to ``out/figures/``; returns what was written and the
    claims table (:func:`bvkit.report.claims_table`)."""
    import pandas as pd

    out = Path(out)
    study = study_frames(out, loss=loss, reference=reference, bootstrap=bootstrap, seed=seed)
    per_split = study.per_split.pivot_table(index="method", columns="split", values=["accuracy", "bias", "variance"],
                                            sort=False)
    with pd.option_context("display.width", 120):
        log(f"\n{loss.capitalize()}-loss decomposition per shot split (mean over classes):")
        log(per_split.round(3).to_string())
        (out / "tables").mkdir(exist_ok=True)
        numeric, shown, notes = make_tables(study, bootstrap=bootstrap, seed=seed)
        for name, frame in shown.items():
            write_table(frame, out / "tables" / name, "markdown")
            log(f"\n{TABLE_TITLES[name]}:\n{render_table(frame, 'markdown')}")
    study.per_split.to_csv(out / "tables" / "per_split.csv", index=False)
    study.per_class.to_csv(out / "tables" / "per_class.csv", index=False)
    numeric["claims"].to_csv(out / "tables" / "claims.csv", index=False)
    made, figure_notes = make_figures(study, bootstrap=bootstrap, seed=seed)
    (out / "figures").mkdir(exist_ok=True)
    for name, figure in made.items():
        save_figure(figure, out / "figures" / name, ["png"])
    for note in notes + figure_notes:
        log(f"note: {note}")
    written = [(out / "tables", "per_split.csv, per_class.csv, claims.csv; accuracy, insights and "
                                "claims tables (markdown)"),
               (out / "figures", f"{', '.join(f'{name}.png' for name in made)}")]
    return written, numeric["claims"]
