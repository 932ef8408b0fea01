"""Does bf16 cost accuracy? The same short CIFAR-10-LT runs in fp32 and in bf16, side by side.

CE and LDAM-DRW, seeds 0 and 1, 10 epochs of the recipes' schedule (milestones scaled: warm-up
1 epoch, lr x0.01 from epoch 9 and x0.0001 from epoch 10, DRW from epoch 9), real CIFAR-10
(IF 100), on the CPU; each pair of runs differs in ``precision`` only (same seed: same
initial weights, data order and augmentation). Writes

  experiments/results/precision_parity.md   test accuracy (all / many / medium / few) and the
                                             last epoch's training loss per run, and bf16 - fp32
  experiments/results/precision_parity.png  the training-loss curves, fp32 solid, bf16 dashed
  experiments/results/precision_parity.json everything in the table, and the per-epoch losses

Runs go to runs/precision_parity/ (ignored) and resume when the script is rerun.

    BVKIT_DATA=/work/main/data-cache nice python experiments/precision_parity.py --threads 2

Expected runtime: 8 runs x 10 epochs of ~11,900 images. Measured here (2 threads, one other job
running, load ~1.4): one epoch of CE at 310 img/s in fp32 and 840 img/s in bf16, i.e. ~40 s and
~15 s an epoch with validation, so ~6.5 + 2.5 minutes per pair and about 40 minutes for all 8
runs; more while other jobs share the machine. ``--epochs 1 --seeds 0 --methods ce`` checks the
set-up in under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bvkit.data.profiles import ALL, SPLITS
from bvkit.train import train
from bvkit.train.devices import fast_bf16

RESULTS = Path("experiments/results")
PRECISIONS = ("fp32", "bf16")


def run_all(methods, seeds, epochs, dataset, imbalance, runs: Path, log) -> list[dict]:
    rows = []
    for method in methods:
        for seed in seeds:
            for precision in PRECISIONS:
                started = time.perf_counter()
                result = train(method, dataset, imbalance=imbalance, seed=seed, device="cpu", epochs=epochs,
                               precision=precision, out=runs / f"{method}-seed{seed}-{precision}", progress=False,
                               log=lambda line, tag=f"{method} seed {seed} {precision}": log(f"[{tag}] {line}"))
                metrics = result.metrics
                rows.append({
                    "method": method, "seed": seed, "precision": metrics["precision"],
                    "accuracy": {name: metrics["accuracy"][name] for name in (ALL, *SPLITS)},
                    "losses": [row["loss"] for row in result.history if row["stage"] == "stage1"],
                    "train_seconds": metrics["train_seconds"], "seconds_this_call": round(time.perf_counter() - started, 1),
                })
    return rows


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def markdown(rows, args) -> str:
    splits = (ALL, *SPLITS)
    lines = [
        f"# bf16 against fp32: the same short {args.dataset} runs",
        "",
        f"`experiments/precision_parity.py` ({args.dataset}, IF {args.imbalance:g}, {args.epochs} epochs, "
        f"seeds {', '.join(map(str, args.seeds))}, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"fast bf16 on this CPU: {'yes' if fast_bf16() else 'no'}). Each pair differs only in `precision`: same "
        "seed, same initial weights, data order and augmentation. Test accuracy in %, per shot split of the "
        "training counts; loss = the last epoch's mean training loss.",
        "",
        "| method | seed | precision | " + " | ".join(splits) + " | last loss | train s |",
        "|---|---|---|" + "---|" * len(splits) + "---|---|",
    ]
    for row in rows:
        cells = " | ".join(pct(row["accuracy"][name]) for name in splits)
        lines.append(f"| {row['method']} | {row['seed']} | {row['precision']} | {cells} | "
                     f"{row['losses'][-1]:.4f} | {row['train_seconds']:.0f} |")
    lines += ["", "bf16 - fp32 (accuracy points; relative loss):", "",
              "| method | seed | " + " | ".join(splits) + " | last loss |", "|---|---|" + "---|" * len(splits) + "---|"]
    pairs = {}
    for row in rows:
        pairs.setdefault((row["method"], row["seed"]), {})[row["precision"]] = row
    for (method, seed), pair in pairs.items():
        if set(pair) != set(PRECISIONS):
            continue
        lo, hi = pair["fp32"], pair["bf16"]
        cells = " | ".join("-" if lo["accuracy"][n] is None else f"{100 * (hi['accuracy'][n] - lo['accuracy'][n]):+.2f}"
                           for n in splits)
        lines.append(f"| {method} | {seed} | {cells} | {hi['losses'][-1] / lo['losses'][-1] - 1:+.2%} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(row["method"] for row in rows))
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
    colours = {}
    for row in rows:
        ax = axes[0][methods.index(row["method"])]
        colour = colours.setdefault(row["seed"], f"C{len(colours)}")
        epochs = range(1, len(row["losses"]) + 1)
        ax.plot(epochs, row["losses"], color=colour, linestyle="-" if row["precision"] == "fp32" else "--",
                marker="o", markersize=3, label=f"seed {row['seed']} {row['precision']}")
    for ax, method in zip(axes[0], methods):
        ax.set(title=method, xlabel="epoch", ylabel="training loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["ce", "ldam-drw"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dataset", default="cifar10-lt")
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default="runs/precision_parity")
    parser.add_argument("--out", default=str(RESULTS / "precision_parity"), help="prefix of the .md, .png, .json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = run_all(args.methods, args.seeds, args.epochs, args.dataset, args.imbalance, Path(args.runs),
                   lambda line: print(line, flush=True))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, args))
    plot(rows, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
