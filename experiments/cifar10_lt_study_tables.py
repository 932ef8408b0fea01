"""Every table of the CIFAR-10-LT study's write-up, made by the toolkit's own commands on the
committed study directory, into experiments/results/cifar10_lt_study_tables.md (the reading is
written by hand in experiments/results/cifar10_lt_study.md, beside it).

    python experiments/cifar10_lt_study_tables.py [--study experiments/results/cifar10_lt_study]

Sections: the runs (epochs, final training accuracy, validation vs test accuracy, seconds,
precision); the backbones' curves at a few epochs and the test accuracy per subset; the logit scale of each method's test outputs; then for the default shot split (> 100 / 20..100 / < 20 images: no few-shot class
on CIFAR-10-LT at IF 100) and for ``--many 1000 --few 200`` (4 / 3 / 3 classes) the output of
``bvkit table`` (accuracy, key insights, claims) and ``bvkit decompose --loss all``, each under
the exact command that printed it; last, the claims table under the zero-one and the
cross-entropy losses (head-vs-tail split). ``bvkit table`` also leaves its files in the
study's tables/ (removed afterwards: the write-up holds them).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bvkit.report.tables import to_markdown
from bvkit.study.reader import Study, load_study

SPLITS_ARGS_HEAD_TAIL = ["--many", "1000", "--few", "200"]
SPLITS = {"the default split (many > 100, few < 20 images)": [],
          "--many 1000 --few 200 (head 5000-1077, medium 645-232, tail 139-50 images)": SPLITS_ARGS_HEAD_TAIL}


def bvkit(*args: str) -> tuple[str, str]:
    """(the command line as a user types it, its standard output)."""
    shown = [a for a in args]
    if "--out" in shown:  # the CSVs go to a temporary folder: not part of the command a reader needs
        i = shown.index("--out")
        del shown[i:i + 2]
    line = "bvkit " + " ".join(shlex.quote(a) for a in shown)
    done = subprocess.run([sys.executable, "-m", "bvkit", *args], capture_output=True, text=True, check=True)
    printed = [text for text in done.stdout.rstrip().splitlines() if not text.startswith("wrote ")]
    return line, "\n".join(printed).rstrip()  # less the paths of the temporary CSVs


def runs_section(study: Path) -> list[str]:
    metrics = pd.read_csv(study / "metrics.csv")
    done = metrics[metrics["status"] == "done"]
    per_method = done.groupby("method", sort=False).agg(
        runs=("run_id", "size"), epochs=("epochs", "max"), train_accuracy=("train_accuracy", "mean"),
        val_accuracy=("val_accuracy", "mean"), test_accuracy=("all", "mean"), test_std=("all", "std"),
        seconds=("seconds", "sum"))
    per_method["val_minus_test_pp"] = 100 * (per_method["val_accuracy"] - per_method["test_accuracy"])
    lines = ["## The runs", "",
             f"{len(done)} of {len(metrics)} runs done. Validation: mean per-class accuracy on the held-out "
             "balanced validation images of the training pool; test: the balanced CIFAR-10 test set (10,000). "
             "train_accuracy: the last epoch's, on augmented batches (empty for a method whose last stage "
             "is a router or a fixed rescaling). seconds: wall-clock of the method's runs, summed (a run "
             "that reuses a stage one counts only its own stage).", "",
             to_markdown(per_method.round(4).reset_index()), ""]
    return lines


def logit_scale_section(study: Study) -> list[str]:
    """How peaked each method's test outputs are: the squared and cross-entropy terms measure
    softmax outputs, so a method that shrinks its logits (tau-norm) shows less variance there."""
    rows = []
    for method, arrays in study.predictions.items():
        logits = np.asarray(arrays["logits"], dtype=np.float64)
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        rows.append({"method": method, "logit_std": logits.std(-1).mean(),
                     "top_probability": (shifted.max(-1) / shifted.sum(-1)).mean()})
    return ["## Logit scale", "",
            "Mean over the D models and test images of the standard deviation of an image's 10 "
            "logits, and of its top softmax probability.", "",
            to_markdown(pd.DataFrame(rows).round(3)), ""]


def curves_section(study: Study, steps=(15, 32, 33, 40)) -> list[str]:
    """Mean training / validation accuracy of each backbone at a few epochs (the lr drop and DRW
    start at epoch 33 of 40), and the per-subset test accuracy of each method."""
    own = study.histories[lambda frame: ~frame["reused"].astype(bool) & frame["step"].isin(steps)]
    curves = (own.groupby(["method", "step"])[["accuracy", "val_accuracy"]].mean() * 100).round(1)
    per_subset = study.metrics.pivot(index="subset", columns="method", values="all") * 100
    per_subset["ldam-drw - ce"] = per_subset["ldam-drw"] - per_subset["ce"]
    per_subset["ride-3 - ldam-drw"] = per_subset["ride-3"] - per_subset["ldam-drw"]
    return ["## Training curves at a few epochs", "",
            f"Mean over the 5 runs of the training and validation accuracy (%) at epochs {steps} "
            "of each method's own stage (runs/<run_id>/history.csv; cRT and the routers count on "
            "from their backbone's 40).", "",
            to_markdown(curves.reset_index()), "",
            "## Test accuracy per subset (%)", "",
            to_markdown(per_subset.round(2).reset_index()), "",
            f"ldam-drw - ce: {per_subset['ldam-drw - ce'].mean():+.2f} ± {per_subset['ldam-drw - ce'].std():.2f}; "
            f"ride-3 - ldam-drw: {per_subset['ride-3 - ldam-drw'].mean():+.2f} ± {per_subset['ride-3 - ldam-drw'].std():.2f} "
            "(mean ± std over subsets).", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="experiments/results/cifar10_lt_study")
    parser.add_argument("--out", default="experiments/results/cifar10_lt_study_tables.md")
    parser.add_argument("--bootstrap", default="1000")
    args = parser.parse_args()
    study = Path(args.study)
    lines = ["# CIFAR-10-LT study: the tables", "",
             f"Made by `python experiments/cifar10_lt_study_tables.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             f"from `{study}` (the committed files only); bootstrap {args.bootstrap}, seed 0.", ""]
    lines += runs_section(study)
    loaded = load_study(study)  # read once for the sections computed here
    lines += curves_section(loaded)
    lines += logit_scale_section(loaded)
    for title, split_args in SPLITS.items():
        lines += [f"## Shot split: {title}", ""]
        command, output = bvkit("table", str(study), "--bootstrap", args.bootstrap, *split_args)
        lines += [f"`{command}`", "", output, ""]
        command, output = bvkit("decompose", str(study), "--loss", "all", *split_args,
                                "--out", tempfile.mkdtemp(prefix="bvkit-decomposition-"))
        lines += [f"`{command}`", "", "```", output, "```", ""]
    head_tail = SPLITS_ARGS_HEAD_TAIL
    lines += ["## Against LDAM-DRW (RIDE's base loss, one ResNet-32), --many 1000 --few 200", "",
              "The key insights with `--reference ldam-drw`: what RIDE's three experts change "
              "against a single model trained with the same loss.", ""]
    command, output = bvkit("table", str(study), "--bootstrap", args.bootstrap, "--reference", "ldam-drw", *head_tail)
    lines += [f"`{command}`", "", output.split("Key insights")[-1].split("\n", 1)[-1].split("The slides' claims")[0].strip(), ""]
    for loss in ("zero-one", "cross-entropy"):
        lines += [f"## The claims under the {loss} loss, --many 1000 --few 200", "",
                  "The tables above decompose the squared loss (the default). The same verdicts "
                  f"when bias and variance are those of the {loss} loss:", ""]
        command, output = bvkit("table", str(study), "--bootstrap", args.bootstrap, "--loss", loss, *head_tail)
        lines += [f"`{command}`", "", output.split("The slides' claims")[-1].split("\n", 1)[-1].strip(), ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    shutil.rmtree(study / "tables", ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
