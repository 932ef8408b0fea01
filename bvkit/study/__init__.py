"""Studies: a TOML spec of methods x training subsets, run with caching, resume and parallel backends.

    >>> from bvkit.study import run_study, load_study
    >>> run_study("experiments/demo.toml", "demo-study", jobs=2)
    >>> study = load_study("demo-study")
    >>> study.metrics, study.predictions["CE"]["logits"].shape, study.decompose(loss="squared")

Names are imported on first use, so reading a study back does not load the runner.
"""

from __future__ import annotations

from bvkit.lazy import lazy_exports

_EXPORTS = {
    "DataSpec": "bvkit.study.spec",
    "MethodSpec": "bvkit.study.spec",
    "StudySpec": "bvkit.study.spec",
    "SubsetSpec": "bvkit.study.spec",
    "load_spec": "bvkit.study.spec",
    "parse_spec": "bvkit.study.spec",
    "RunTask": "bvkit.study.planning",
    "plan_runs": "bvkit.study.planning",
    "planned_runs": "bvkit.study.planning",
    "run_study": "bvkit.study.runner",
    "gather": "bvkit.study.gather",
    "Study": "bvkit.study.reader",
    "load_study": "bvkit.study.reader",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("bvkit.study", _EXPORTS, globals())
