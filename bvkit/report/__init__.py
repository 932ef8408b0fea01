"""Figures, tables and an HTML report from tidy decomposition frames (or a whole study directory).

Every figure function takes pandas frames in :mod:`bvkit.decomposition`'s columns
(``docs/formats.md``) and returns a matplotlib Figure (Agg backend), so a notebook can call
them on its own data; the table functions return frames; :func:`study_frames` builds all the
frames of a study; :func:`claims_table` checks the RIDE slides' claims on them
(``docs/claims.md``); ``bvkit figures|table|report DIR`` wire them to a study directory.
"""

from bvkit.report.claims import (
    ablation_arms,
    claims_summary,
    claims_table,
    format_claims,
    method_roles,
)
from bvkit.report.differences import (
    class_differences,
    class_order,
    smoothed_differences,
    split_differences_from_comparison,
    split_differences_from_samples,
)
from bvkit.report.figures import (
    add_split_bands,
    expert_usage_summary,
    plot_class_difference,
    plot_expert_usage,
    plot_experts,
    plot_metric_overview,
    plot_split_bars,
    save_figure,
)
from bvkit.report.html import Section, render_report
from bvkit.report.smoothing import moving_average
from bvkit.report.study import StudyFrames, study_frames
from bvkit.report.style import method_palette
from bvkit.report.tables import (
    accuracy_table,
    format_accuracy_table,
    format_key_insights,
    key_insights,
    read_markdown,
    render_table,
    verdict,
    write_table,
)

__all__ = [
    "Section", "StudyFrames", "ablation_arms", "accuracy_table", "add_split_bands", "claims_summary",
    "claims_table", "class_differences",
    "class_order", "expert_usage_summary", "format_accuracy_table", "format_claims",
    "format_key_insights",
    "key_insights", "method_palette", "method_roles", "moving_average", "plot_class_difference",
    "plot_expert_usage", "plot_experts", "plot_metric_overview", "plot_split_bars", "read_markdown",
    "render_report", "render_table", "save_figure", "smoothed_differences",
    "split_differences_from_comparison", "split_differences_from_samples", "study_frames",
    "verdict", "write_table",
]
