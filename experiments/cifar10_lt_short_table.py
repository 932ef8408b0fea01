"""Print the Markdown results table of experiments/cifar10_lt_short.sh from its metrics files."""

import json
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"


def cell(value):
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    print("| method | epochs | All | Many | Medium | Few | val (mean class acc) | MFLOPs | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in ("ce", "ldam-drw", "ride"):
        path = RESULTS / f"cifar10_lt_short_{method}_metrics.json"
        if not path.exists():
            print(f"| {method} | (not finished) | | | | | | | |")
            continue
        m = json.loads(path.read_text())
        acc = m["accuracy"]
        history = pd.read_csv(RESULTS / f"cifar10_lt_short_{method}_history.csv")
        train_seconds = history["seconds"].sum() if "seconds" in history else m["seconds"]
        print(f"| {method} | {m['epochs']} | {cell(acc['all'])} | {cell(acc['many'])} | {cell(acc['medium'])} "
              f"| {cell(acc['few'])} | {cell(m['val_accuracy'])} | {m['mflops']:.1f} | {train_seconds:.0f} |")


if __name__ == "__main__":
    main()
