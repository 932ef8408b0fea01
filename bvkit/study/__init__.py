"""Studies: a TOML spec of methods x training subsets, run with caching, resume and parallel backends.

    >>> from bvkit.study import run_study, load_study
    >>> run_study("experiments/demo.toml", "demo-study", jobs=2)
    >>> study = load_study("demo-study")
    >>> study.metrics, study.predictions["CE"]["logits"].shape, study.decompose(loss="squared")
"""

from bvkit.study.results import Study, gather, load_study
from bvkit.study.runner import RunTask, plan_runs, planned_runs, run_study
from bvkit.study.spec import DataSpec, MethodSpec, StudySpec, SubsetSpec, load_spec, parse_spec

__all__ = [
    "DataSpec",
    "MethodSpec",
    "RunTask",
    "Study",
    "StudySpec",
    "SubsetSpec",
    "gather",
    "load_spec",
    "load_study",
    "parse_spec",
    "plan_runs",
    "planned_runs",
    "run_study",
]
