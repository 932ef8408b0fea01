"""Print the Markdown results table of experiments/cifar10_lt_short.sh from its metrics files."""

import json
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
RUNS = Path(__file__).parent.parent / "runs" / "cifar10_lt_short"


def cell(value):
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    print("| method | epochs | All | Many | Medium | Few | val (mean class acc) | MFLOPs | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in ("ce", "ldam-drw", "ride", "bbn", "oltr", "lfme", "m2m"):
        path = RESULTS / f"cifar10_lt_short_{method}_metrics.json"
        if not path.exists():
            print(f"| {method} | (not finished) | | | | | | | |")
            continue
        m = json.loads(path.read_text())
        acc = m["accuracy"]
        history = pd.read_csv(RESULTS / f"cifar10_lt_short_{method}_history.csv")
        train_seconds = history["seconds"].sum() if "seconds" in history else m["seconds"]
        # nested runs (OLTR's stage one, M2m's g, LFME's experts) keep their own histories
        nested = sorted((RUNS / method).glob("*/history.csv")) if (RUNS / method).is_dir() else []
        train_seconds += sum(pd.read_csv(path)["seconds"].sum() for path in nested)
        print(f"| {method} | {m['epochs']} | {cell(acc['all'])} | {cell(acc['many'])} | {cell(acc['medium'])} "
              f"| {cell(acc['few'])} | {cell(m['val_accuracy'])} | {m['mflops']:.1f} | {train_seconds:.0f} |")


if __name__ == "__main__":
    main()
