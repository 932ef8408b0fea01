"""One look for every figure: a method -> colour palette, paper-size fonts, split shading."""

from __future__ import annotations

from collections.abc import Iterable

# Okabe-Ito: distinguishable under the common colour-vision deficiencies.
BASELINE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
                    "#F0E442", "#8C564B", "#17BECF", "#7F7F7F")
# RIDE variants in reds (light -> dark with more experts), so the proposed method stands out.
RIDE_COLOURS = ("#B2182B", "#E7298A", "#67001F", "#F4A582", "#D6604D")
REFERENCE_COLOUR = "#333333"

SPLIT_LABELS = {"many": "Many", "medium": "Med", "few": "Few", "all": "All"}
SPLIT_SHADES = {"many": "#EDEDED", "medium": "#F7F7F7", "few": "#DADADA"}

COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
PAGE_WIDTH = 7.0  # inches: a figure spanning both columns

PAPER_RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "savefig.dpi": 200,
    "figure.dpi": 100,
}

METRIC_LABELS = {
    "accuracy": "accuracy (%)",
    "error": "error",
    "bias": "bias",
    "variance": "variance",
    "net_variance": "net variance",
    "ensemble_loss": "ensemble loss",
    "average_bias": "average bias",
    "average_variance": "average variance",
    "diversity": "diversity",
}
# Lower is better for every decomposition term; higher is better for accuracy.
HIGHER_IS_BETTER = {"accuracy": True, "error": False, "bias": False, "variance": False,
                    "net_variance": False, "variance_unbiased": False, "variance_biased": False}


def is_ride(method: str) -> bool:
    return str(method).lower().startswith("ride")


def method_palette(methods: Iterable[str], reference: str | None = None) -> dict[str, str]:
    """Method -> colour, the same for every figure of a study: build it once from all methods.

    The reference is dark grey, RIDE variants are reds, other methods take the Okabe-Ito colours
    in sorted-name order (so the mapping does not depend on row order in a frame).
    """
    names = sorted({str(m) for m in methods})
    palette: dict[str, str] = {}
    rides = [m for m in names if m != reference and is_ride(m)]
    others = [m for m in names if m != reference and not is_ride(m)]
    for i, method in enumerate(rides):
        palette[method] = RIDE_COLOURS[i % len(RIDE_COLOURS)]
    for i, method in enumerate(others):
        palette[method] = BASELINE_COLOURS[i % len(BASELINE_COLOURS)]
    if reference is not None and reference in names:
        palette[reference] = REFERENCE_COLOUR
    return palette


def method_order(methods: Iterable[str], reference: str | None = None) -> list[str]:
    """Reference first, then baselines, then RIDE variants (each group by name)."""
    names = sorted({str(m) for m in methods})
    head = [reference] if reference in names else []
    baselines = [m for m in names if m != reference and not is_ride(m)]
    rides = [m for m in names if m != reference and is_ride(m)]
    return head + baselines + rides


def metric_scale(metric: str) -> float:
    """Accuracy is stored as a fraction and drawn in percent (points); other terms as they are."""
    return 100.0 if metric == "accuracy" else 1.0
