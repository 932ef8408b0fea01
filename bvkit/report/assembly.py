"""A study's report assembled from its frames (:func:`bvkit.report.study_frames`): the figures,
the tables and the HTML page that ``bvkit figures``, ``bvkit table``, ``bvkit report`` and
``bvkit demo`` write."""

from __future__ import annotations

from bvkit.report.html import Section, render_report


def make_figures(frames, *, bootstrap: int, seed: int, window: int | None = None) -> tuple[dict, list[str]]:
    """name -> Figure for a study's frames (:func:`bvkit.report.study_frames`), and notes on
    figures left out."""
    from bvkit.report import figures
    from bvkit.report.style import method_palette

    palette = method_palette(frames.methods, frames.reference)
    common = dict(per_sample=frames.per_sample, window=window, bootstrap=bootstrap, seed=seed,
                  palette=palette, leave_one_out=frames.leave_one_out)
    made = {"accuracy_difference": figures.plot_class_difference(
        frames.per_class, "accuracy", frames.reference, **common)}
    for metric in ("bias", "variance"):
        made[metric] = figures.plot_metric_overview(
            frames.per_class, frames.per_split, metric, frames.reference,
            split_differences=frames.split_differences, **common)
    made["splits"] = figures.plot_split_bars(frames.per_split, reference=frames.reference,
                                             palette=palette)
    notes = []
    if frames.expert_usage is not None:
        made["expert_usage"] = figures.plot_expert_usage(frames.expert_usage)
    else:
        notes.append("expert usage: no routed RIDE runs (no expert_usage.csv); figure skipped")
    if frames.experts is not None:
        made["experts"] = figures.plot_experts(frames.experts.per_split,
                                               reference=frames.reference, palette=palette)
    else:
        notes.append("experts: no method has expert logits (expert_logits); figure skipped")
    if frames.histories is not None and not frames.histories["reused"].all():
        made["training_curves"] = figures.plot_training_curves(
            frames.histories, reference=frames.reference, palette=palette)
    else:
        notes.append("training curves: no run has a history.csv under runs/; figure skipped")
    if frames.along_training is not None:
        made["along_training"] = figures.plot_along_training(frames.along_training, reference=frames.reference,
                                                             palette=palette)
    else:
        notes.append("training: no method has test snapshots of all its runs (snapshots.npz); "
                     "bias and variance along training skipped")
    return made, notes


def make_tables(frames, *, bootstrap: int = 1000, seed: int = 0) -> tuple[dict, dict, list[str]]:
    """(numeric tables, display tables, notes): accuracy (when metrics.csv exists), insights,
    the slides' claims (``bootstrap`` resamples, ``seed``)."""
    from bvkit.report import claims, tables

    numeric, shown, notes = {}, {}, []
    if frames.metrics is not None:
        numeric["accuracy"] = tables.accuracy_table(frames.metrics, frames.reference,
                                                    split_accuracy=frames.split_accuracy)
        shown["accuracy"] = tables.format_accuracy_table(numeric["accuracy"], frames.reference)
    else:
        notes.append("accuracy table: no metrics.csv in the study directory; table skipped")
    numeric["insights"] = tables.key_insights(frames.split_differences, frames.reference)
    for split, side in tables.INSIGHT_SPLITS.items():
        if split not in set(numeric["insights"]["split"]):
            notes.append(f"key insights: the {split}-shot split has no classes; {side} columns left out")
    shown["insights"] = tables.format_key_insights(numeric["insights"])
    numeric["claims"] = claims.claims_table(frames, bootstrap=bootstrap, seed=seed)
    shown["claims"] = claims.format_claims(numeric["claims"], frames.reference)
    return numeric, shown, notes


TABLE_TITLES = {
    "accuracy": "Accuracy (%): mean ± std over runs; MFLOPs with the factor vs the reference",
    "insights": "Key insights: many-shot (head) and few-shot (tail) vs the reference "
                "(Comparable when the interval of the difference covers 0; "
                "lower bias / variance is better)",
    "claims": "The slides' claims on this study: holds / fails when every interval "
              "lies on the claimed / the other side of 0 (docs/claims.md)",
}


def interval_words(frames) -> str:
    """What the study's intervals cover, for captions: the population estimator's (training
    sets and test samples) or the plug-in one's (test samples)."""
    if frames.leave_one_out:
        return ("intervals over training sets and test samples (population terms, "
                "docs/bias_variance.md)")
    return "bootstrap intervals over test samples (plug-in terms)"


def report_page(frames, made: dict, figure_notes: list[str], shown: dict, table_notes: list[str], *,
                bootstrap: int, seed: int) -> str:
    """The self-contained HTML page of a study's tables and figures."""
    ref, loss = frames.reference, frames.loss
    intervals = interval_words(frames)
    sections = [
        Section("Tables", tables=[(TABLE_TITLES[name], frame) for name, frame in shown.items()],
                notes=table_notes),
        Section("Accuracy vs the reference", figures=[(
            f"Per-class accuracy minus {ref}, classes sorted by training count; moving average "
            f"with its band ({intervals})", made["accuracy_difference"])]),
        Section(f"Bias ({loss} loss)", figures=[(
            f"(a) per-class bias, (b) change vs {ref} per class, (c) per split with "
            f"{intervals}", made["bias"])]),
        Section(f"Variance ({loss} loss)", figures=[(
            f"(a) per-class variance, (b) change vs {ref} per class, (c) per split with "
            f"{intervals}", made["variance"])]),
        Section("Per split", figures=[("Accuracy, bias and variance per shot split with "
                                       f"{intervals}", made["splits"])]),
        Section("Expert assignment", notes=[n for n in figure_notes if n.startswith("expert usage")], figures=[
            ("Share of samples routed to 1..n experts per shot split", made["expert_usage"])]
            if "expert_usage" in made else []),
        Section("Experts", notes=[n for n in figure_notes if n.startswith("experts:")], figures=[(
            "The experts' bias-variance-diversity decomposition (Wood et al. 2023) under "
            "cross-entropy, with RIDE's own combiner (the softmax of the experts' mean logits), "
            f"per shot split with {intervals}; a routed method's rows are those of all "
            "its experts (docs/bias_variance.md)", made["experts"])]
            if "experts" in made else []),
        Section("Training curves", notes=[n for n in figure_notes if n.startswith("training")], figures=[(
            "Training and validation accuracy per epoch from the start of each model's training "
            "(thin: one run per subset; bold: their mean); a method reusing a stage one starts "
            "where its own stage does", made["training_curves"])] if "training_curves" in made else []),
        Section("Bias and variance along training", figures=[(
            f"Bias and variance ({loss} loss) per shot split of the D models' test snapshots every "
            "tenth of stage one (methods that train their own stage one)", made["along_training"])]
            if "along_training" in made else []),
    ]
    subtitle = (f"{frames.directory.resolve().name}: {len(frames.methods)} methods "
                f"({', '.join(frames.methods)}), {loss} decomposition, reference {ref}, shot "
                f"splits many > {frames.many}, few < {frames.few} training images, "
                f"{bootstrap} bootstrap resamples (seed {seed}).")
    page = render_report(f"bvkit report: {frames.directory.resolve().name}", sections,
                         subtitle=subtitle)
    return page
