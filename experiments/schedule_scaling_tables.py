"""Which short-schedule rule agrees best with the full recipe? The tables of
experiments/results/schedule_scaling.md, from the studies as they stand (runs land over hours: every
table uses the subsets done so far and says which).

    python experiments/schedule_scaling_tables.py [--full experiments/results/cifar10_lt_study_200] \\
        [--short experiments/results/cifar10_lt_study experiments/results/schedule_scaling]

``--full``: the 200-epoch study (each recipe's own schedule, the reference). ``--short``: 40-epoch
studies of the same data, subsets and seeds; a method label ending in ``-<rule>`` (a name of
``bvkit.methods.SCHEDULE_SCALINGS``) is that method under that rule, a bare label the
``proportional`` rule (the 40-epoch study's). Per (method, rule, subset) done in both: the
validation accuracy (mean per class, the run's own held-out images: what chooses) and the test
accuracy per split at ``--many 1000 --few 200`` (reported only), each beside the 200-epoch run of
the same subset. The rule whose validation accuracy lies closest to the 200-epoch runs' (mean
absolute difference over the (method, subset) pairs every rule has) is the one the data favour;
which method wins plays no part.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from bvkit.data.profiles import ALL, SPLITS, shot_splits, split_means
from bvkit.methods.recipe import SCHEDULE_SCALINGS
from bvkit.report.tables import to_markdown
from bvkit.study.reader import load_study
from bvkit.train.metrics import per_class_accuracy

MANY, FEW = 1000, 200


def method_and_rule(label: str) -> tuple[str, str]:
    """``ce-keep-steps`` -> (``ce``, ``keep-steps``); a bare label is the proportional rule's."""
    for rule in SCHEDULE_SCALINGS:
        if label.endswith(f"-{rule}"):
            return label[: -len(rule) - 1], rule
    return label, "proportional"


def run_rows(study, schedule: str) -> pd.DataFrame:
    """One row per finished run: method, rule, subset, validation and test accuracy (%) per split."""
    from bvkit.study.reader import _long_tailed_counts

    counts = _long_tailed_counts(study.spec)
    splits = shot_splits(counts, MANY, FEW)
    rows = []
    metrics = study.metrics
    for run in metrics[metrics["status"] == "done"].itertuples():
        with np.load(study.path / "runs" / run.run_id / "predictions.npz") as arrays:
            logits, labels = arrays["logits"][0], arrays["labels"]
        test = split_means(per_class_accuracy(logits.argmax(1), labels, len(counts)), splits)
        method, rule = method_and_rule(run.method)
        rows.append({"method": method, "rule": rule if schedule != "full" else "full", "subset": int(run.subset),
                     "val": 100 * run.val_accuracy, **{f"test {k}": 100 * test[k] for k in (ALL, *SPLITS)}})
    return pd.DataFrame(rows)


def paired(full: pd.DataFrame, short: pd.DataFrame) -> pd.DataFrame:
    """Each short run beside the 200-epoch run of the same method and subset: the differences."""
    both = short.merge(full.drop(columns="rule"), on=["method", "subset"], suffixes=("", " (200)"))
    for column in ("val", f"test {ALL}"):
        both[f"{column} - 200"] = both[column] - both[f"{column} (200)"]
    return both


def agreement(both: pd.DataFrame) -> pd.DataFrame:
    """Per rule: the mean absolute and the mean signed difference from the 200-epoch runs, on the
    (method, subset) pairs that every rule present has."""
    rules = sorted(both["rule"].unique())
    common = both.groupby(["method", "subset"])["rule"].nunique()
    keep = common[common == len(rules)].index
    fair = both.set_index(["method", "subset"]).loc[keep].reset_index() if len(keep) else both.iloc[:0]
    rows = []
    for rule, group in fair.groupby("rule"):
        rows.append({"rule": rule, "pairs": len(group),
                     "mean |val - 200|": group["val - 200"].abs().mean(), "mean (val - 200)": group["val - 200"].mean(),
                     "mean |test - 200|": group[f"test {ALL} - 200"].abs().mean()})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", default="experiments/results/cifar10_lt_study_200")
    parser.add_argument("--short", nargs="+",
                        default=["experiments/results/cifar10_lt_study", "experiments/results/schedule_scaling"])
    parser.add_argument("--out", default="experiments/results/schedule_scaling_tables.md")
    args = parser.parse_args()
    full = run_rows(load_study(args.full), "full")
    short = pd.concat([run_rows(load_study(path), "short") for path in args.short if Path(path, "metrics.csv").exists()],
                      ignore_index=True)
    both = paired(full, short)
    per_run = both[["method", "subset", "rule", "val", "val (200)", "val - 200",
                    *(f"test {k}" for k in (ALL, *SPLITS)), f"test {ALL} (200)", f"test {ALL} - 200"]]
    table = agreement(both)
    lines = ["# Short-schedule rules against the 200-epoch recipe: the tables", "",
             f"`python experiments/schedule_scaling_tables.py --full {args.full} --short {' '.join(args.short)}`. "
             f"Runs paired with a 200-epoch run of the same method and subset: {len(both)}; subsets: "
             f"{sorted(both['subset'].unique().tolist())}. Accuracy in %, mean per class; test splits at "
             f"`--many {MANY} --few {FEW}`. The validation accuracy chooses; the test accuracy is reported only.", "",
             "## Per run", "", to_markdown(per_run.sort_values(["method", "subset", "rule"]).round(2)), "",
             "## Agreement with the 200-epoch runs, per rule", "",
             "On the (method, subset) pairs that every rule present has.", "",
             to_markdown(table.round(2)) if not table.empty else "Not yet: no (method, subset) has a run under every rule.",
             ""]
    if not table.empty and table["rule"].nunique() > 1:
        best = table.loc[table["mean |val - 200|"].idxmin()]
        lines += [f"Closest to the 200-epoch runs on validation: **{best['rule']}** "
                  f"(mean |val - 200| {best['mean |val - 200|']:.2f} points over {int(best['pairs'])} pairs).", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
