"""The tables of the 200-epoch CIFAR-10-LT study's write-up, from the study directory as it stands
(runs land over many hours: every section uses the runs done so far and says how many), into
experiments/results/cifar10_lt_study_200_tables.md; the reading is written by hand in
experiments/results/cifar10_lt_study_200.md.

    python experiments/cifar10_lt_study_200_tables.py \\
        [--study experiments/results/cifar10_lt_study_200] [--short experiments/results/cifar10_lt_study]

Sections (shot splits at --many 1000 --few 200: head 5000-1077, medium 645-232, tail 139-50 images):
1. fidelity: each method's last-epoch test accuracy (mean +- std over the subsets done, per split)
   and the anchors' protocol, the best epoch on the test set (history's test_accuracy, recorded
   for reporting only; stage-one methods), beside the published CIFAR-10-LT (IF 100) figures;
2. validation against the check draw and the test set, per run (metrics.json val_check);
3. the orderings RIDE-3 > LDAM-DRW > CE per subset, paired with the 40-epoch study (``--short``);
4. bias and variance along training (the snapshots every 20 epochs, squared loss), per split;
5. once every method is complete: ``bvkit table`` (accuracy, insights, claims) for both studies
   and the claims under the zero-one and cross-entropy losses.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bvkit.data.profiles import ALL, SPLITS, shot_splits, split_means
from bvkit.report.tables import to_markdown
from bvkit.study.reader import load_study
from bvkit.train.metrics import per_class_accuracy

MANY, FEW = 1000, 200
SPLIT_ARGS = ["--many", str(MANY), "--few", str(FEW)]
# Published CIFAR-10-LT (IF 100) test accuracy, %: CE and LDAM-DRW from the LDAM-DRW paper (Cao et
# al. 2019, Table 2), RIDE-3 from a public re-run of the RIDE authors' code (the RIDE paper has no
# CIFAR-10 figure); the anchors select their reported epoch on the test set.
PUBLISHED = {"ce": 70.4, "ldam-drw": 77.0, "ride-3": 81.1}
ORDER = ("ride-3", "ldam-drw", "ce")


def run_split_accuracy(run_dir: Path, counts: np.ndarray) -> dict:
    """A run's test accuracy (%) overall and per split at --many / --few, from its predictions."""
    with np.load(run_dir / "predictions.npz") as arrays:
        logits, labels = arrays["logits"][0], arrays["labels"]
    means = split_means(per_class_accuracy(logits.argmax(1), labels, len(counts)), shot_splits(counts, MANY, FEW))
    return {k: 100 * means[k] for k in (ALL, *SPLITS)}


def done_runs(study) -> pd.DataFrame:
    metrics = study.metrics
    return metrics[metrics["status"] == "done"].sort_values(["method", "subset"])


def fidelity(study, counts) -> list[str]:
    done = done_runs(study)
    histories = study.histories
    rows = []
    for method in study.methods:
        runs = done[done["method"] == method]
        if runs.empty:
            continue
        split_rows = pd.DataFrame([run_split_accuracy(study.path / "runs" / r, counts) for r in runs["run_id"]])
        row = {"method": method, "runs": len(runs)}
        for key in (ALL, *SPLITS):
            std = split_rows[key].std() if len(runs) > 1 else float("nan")
            row[key] = f"{split_rows[key].mean():.2f}" + (f" ± {std:.2f}" if len(runs) > 1 else "")
        own = histories[(histories["method"] == method) & ~histories["reused"].astype(bool)]
        if "test_accuracy" in own and own["test_accuracy"].notna().any() and runs["stage_one"].isna().all():
            best = own.groupby("run_id")["test_accuracy"].max() * 100
            last = own.dropna(subset=["test_accuracy"]).groupby("run_id")["epoch"].max()
            at = own.loc[own.groupby("run_id")["test_accuracy"].idxmax(), "epoch"]
            row["best epoch on test"] = f"{best.mean():.2f}" + (f" ± {best.std():.2f}" if len(best) > 1 else "")
            row["its epochs"] = ", ".join(str(int(e)) for e in at) + f" (of {int(last.max())})"
        row["published"] = PUBLISHED.get(method, "")
        rows.append(row)
    return ["## 1. Fidelity: test accuracy (%) at the last epoch and at the best epoch on test", "",
            f"Mean ± std over the subsets done (`runs`); splits at `--many {MANY} --few {FEW}`; 'best epoch "
            "on test' is the anchors' protocol (RIDE's model_best, LDAM-DRW's Best Prec@1), from history.csv's "
            "test_accuracy (epochs 160-200), shown only beside bvkit's last epoch, never used. cRT, tau-norm and "
            "the routers reuse a stage one and have no best epoch of their own. The images are the JPEG q75 copy "
            "of CIFAR-10 (`../shared/data`), a little below the original everywhere; nothing is adjusted for it.",
            "", to_markdown(pd.DataFrame(rows).fillna("")), ""]


def validation(study) -> list[str]:
    rows = []
    for _, run in done_runs(study).iterrows():
        metrics = json.loads((study.path / "runs" / run["run_id"] / "metrics.json").read_text())
        check = metrics.get("val_check") or {}
        rows.append({"method": run["method"], "subset": run["subset"],
                     "val (all classes)": 100 * metrics["val_accuracy"],
                     "val (classes 1-9)": 100 * check["val_accuracy"] if check else None,
                     "check (classes 1-9)": 100 * check["check_accuracy"] if check else None,
                     "z": check.get("z"), "test": 100 * run["all"],
                     "val - test": 100 * (metrics["val_accuracy"] - run["all"])})
    frame = pd.DataFrame(rows)
    flagged = frame[frame["z"].abs() > 3] if not frame.empty else frame
    return ["## 2. Validation against the check draw and the test set, per run", "",
            "Validation: 50 unused pool images per class (the head class's 50 carved from its training images); "
            "check: the next 500 per class of the same random order (classes 1-9: the head class has no unused "
            "image); z of validation against check over classes 1-9 (`metrics.json` val_check; |z| > 3 flags a "
            f"validation set unlike its pool). Runs flagged: {len(flagged)} of {len(frame)}.", "",
            to_markdown(frame.round(2)), ""]


def orderings(study, short, counts) -> list[str]:
    rows = []
    for name, which in (("200 epochs", study), ("40 epochs", short)):
        if which is None:
            continue
        done = done_runs(which)
        for subset in sorted(done["subset"].unique()):
            accs = {}
            for method in ORDER:
                run = done[(done["method"] == method) & (done["subset"] == subset)]
                if len(run):
                    accs[method] = run_split_accuracy(which.path / "runs" / run["run_id"].item(), counts)[ALL]
            if len(accs) == len(ORDER):
                rows.append({"schedule": name, "subset": subset, **{m: round(accs[m], 2) for m in ORDER},
                             "ride-3 - ldam-drw": round(accs["ride-3"] - accs["ldam-drw"], 2),
                             "ldam-drw - ce": round(accs["ldam-drw"] - accs["ce"], 2),
                             "RIDE-3 > LDAM-DRW > CE": accs["ride-3"] > accs["ldam-drw"] > accs["ce"]})
    return ["## 3. The orderings per subset, paired with the 40-epoch study", "",
            "Test accuracy (%), subset k is the same training set at both schedules.", "",
            to_markdown(pd.DataFrame(rows)), ""]


def along_training(study) -> list[str]:
    try:
        frame = study.decompose_along_training(loss="squared", many=MANY, few=FEW)
    except Exception as err:  # no method has all its runs' snapshots yet
        return ["## 4. Bias and variance along training", "", f"Not yet: {err}", ""]
    wide = frame.pivot_table(index=["method", "epoch"], columns="split", values=["bias", "variance"])
    wide.columns = [f"{term} {split}" for term, split in wide.columns]
    order = [f"{t} {s}" for t in ("bias", "variance") for s in (*SPLITS, ALL) if f"{t} {s}" in wide.columns]
    return ["## 4. Bias and variance along training (squared loss, test snapshots every 20 epochs)", "",
            f"`load_study(DIR).decompose_along_training(loss='squared', many={MANY}, few={FEW})`; methods "
            "whose runs are all done (each trains its own stage one).", "",
            to_markdown(wide[order].round(4).reset_index()), ""]


def bvkit_table(study_dir: Path, *args: str) -> list[str]:
    """``bvkit table`` under the command that printed it (its files in the study's tables/ are
    removed afterwards unless they were there before: the write-up holds them)."""
    line = f"bvkit table {study_dir} " + " ".join(args)
    had_tables = (study_dir / "tables").exists()
    done = subprocess.run([sys.executable, "-m", "bvkit", "table", str(study_dir), *args], capture_output=True,
                          text=True)
    if not had_tables:
        shutil.rmtree(study_dir / "tables", ignore_errors=True)
    printed = "\n".join(t for t in done.stdout.splitlines() if not t.startswith("wrote "))
    return [f"`{line}`", "", "```", printed.rstrip() or done.stderr.strip(), "```", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="experiments/results/cifar10_lt_study_200")
    parser.add_argument("--short", default="experiments/results/cifar10_lt_study")
    parser.add_argument("--out", default="experiments/results/cifar10_lt_study_200_tables.md")
    args = parser.parse_args()
    study = load_study(args.study)
    short = load_study(args.short) if args.short else None
    from bvkit.study.reader import _long_tailed_counts

    counts = _long_tailed_counts(study.spec)
    done = done_runs(study)
    lines = [f"# Tables of the 200-epoch CIFAR-10-LT study ({args.study})", "",
             f"`python experiments/cifar10_lt_study_200_tables.py --study {args.study} --short {args.short}`: "
             f"{len(done)} of {len(study.metrics)} runs done.", ""]
    lines += fidelity(study, counts) + validation(study) + orderings(study, short, counts) + along_training(study)
    complete = set(study.prediction_sets) == set(study.methods)
    lines += ["## 5. Claims (both schedules)", ""]
    if not complete:
        lines += ["Not yet: the claims need every run of every method.", ""]
    else:
        for loss in ("squared", "zero-one", "cross-entropy"):
            for directory in (Path(args.study), Path(args.short)):
                lines += bvkit_table(directory, *SPLIT_ARGS, "--loss", loss)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
