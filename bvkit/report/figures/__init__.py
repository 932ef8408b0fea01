"""The paper's figures from tidy decomposition frames; every function returns a matplotlib Figure.

Points, curves and bars are drawn by seaborn from tidy frames (hue = method, one palette per
study); every band and error bar is an interval of the decomposition's one bootstrap engine.

Artists carry ``gid`` tags so their data can be read back (tests do): ``classes:<method>``
(per-class points), ``smooth:<method>`` (moving average), ``band:<method>`` (its bootstrap band),
``split:<split>`` (background span of a shot split), ``bar:<metric>:<method>:<split>``,
``expert:<method>:<split>:<k>`` (share of samples using k experts), ``curve:<metric>:<method>``
and ``run:<metric>:<method>:<subset>`` (training curves); bars also carry
``err:<metric>:<method>:<split>`` on their interval's line.
"""

from bvkit.report.figures.classes import draw_class_difference, plot_class_difference, plot_metric_overview
from bvkit.report.figures.drawing import CLASS_AXIS_LABEL, add_split_bands, paper_style, save_figure
from bvkit.report.figures.splits import (
    EXPERT_PANELS,
    expert_usage_summary,
    plot_expert_usage,
    plot_experts,
    plot_split_bars,
)
from bvkit.report.figures.training import CURVE_METRICS, plot_along_training, plot_training_curves

__all__ = [
    "CLASS_AXIS_LABEL", "CURVE_METRICS", "EXPERT_PANELS", "add_split_bands", "draw_class_difference",
    "expert_usage_summary", "paper_style", "plot_along_training", "plot_class_difference",
    "plot_experts", "plot_expert_usage", "plot_metric_overview", "plot_split_bars",
    "plot_training_curves", "save_figure",
]
