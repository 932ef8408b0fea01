"""Is the demo's schedule long enough? CE and LDAM-DRW on mini-lt at the demo's model (width 8,
one block per stage, lr 0.1; batch and crop padding as the demo's preset, 64 and 2, unless
given) for several epoch counts, each recipe's milestones scaled as the demo scales them; per
run the training accuracy per epoch, the test accuracy per split, and the seconds, in the run's
default precision (auto: bf16 where fast) and, at the first epoch count, in fp32.

Trains on the long-tailed mini-lt set itself (IF 100, 2295 images; the demo's subsets are
redrawn from the same pool with the same counts), one torch thread (as each of the demo's two
loky workers), seed 0. Writes experiments/results/demo_schedule.{md,json}.

    nice python experiments/demo_schedule.py --epochs 30,60,120     # ~5 minutes on the 2-core CPU, quiet

``--schedule-scalings`` trains each count under each named rule for moving the milestones
(``bvkit.train.schedule``: proportional, keep-steps, min-share); the last epoch's validation
accuracy is recorded beside the test accuracy, which is only reported.

``--look`` (JSON) replaces mini-lt's generator settings (``bvkit.data.synthetic.MINI_LT``);
experiments/results/demo_schedule_previous_look.md is the record of the look it had before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from bvkit.data import make_long_tailed
from bvkit.data.profiles import ALL, SPLITS
from bvkit.data.synthetic import MINI_LT
from bvkit.train import train

DEMO = {"model_kwargs.width": 8, "model_kwargs.blocks": 1, "val_per_class": 10, "lr": 0.1}
RESULTS = Path("experiments/results")


def one_run(method: str, epochs: int, precision: str, data, scaling: str = "proportional") -> dict:
    started = time.perf_counter()
    result = train(method, data, seed=0, device="cpu", epochs=epochs, precision=precision, progress=False,
                   schedule_scaling=scaling, **DEMO)
    seconds = time.perf_counter() - started
    stage_one = [row for row in result.history if row["stage"] == "stage1"]
    return {"method": method, "epochs": epochs, "schedule_scaling": scaling, "precision": result.metrics["precision"],
            "seconds": round(seconds, 1), "train_accuracy": [round(row["accuracy"], 4) for row in stage_one],
            "val_accuracy": stage_one[-1].get("val_accuracy"),
            "test": {k: result.metrics["accuracy"][k] for k in (ALL, *SPLITS)}}


def plateau(curve: list[float]) -> str:
    """Training accuracy at 40 %, 60 % and 80 % of the schedule (the first lr drop is at 80 %)
    and at the end."""
    n = len(curve)
    marks = [max(1, round(n * f)) for f in (0.4, 0.6, 0.8)] + [n]
    return " / ".join(f"{curve[m - 1]:.2f}" for m in marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="20,30,40")
    parser.add_argument("--methods", default="ce,ldam-drw")
    parser.add_argument("--look", default="{}", help="JSON generator settings over mini-lt's")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--padding", type=int, default=2)
    parser.add_argument("--schedule-scalings", default="proportional",
                        help="comma-separated rules for moving the milestones (each epoch count under each)")
    parser.add_argument("--no-fp32", action="store_true", help="skip the fp32 run at the first epoch count")
    parser.add_argument("--out", default=str(RESULTS / "demo_schedule"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    DEMO.update({"batch_size": args.batch_size, "augment.crop_padding": args.padding})
    look = {**MINI_LT, **json.loads(args.look)}
    data = make_long_tailed("mini-lt", imbalance=100, **look)
    load = [round(os.getloadavg()[0], 2)]
    rows = []
    for method in args.methods.split(","):
        for epochs in (int(e) for e in args.epochs.split(",")):
            for scaling in args.schedule_scalings.split(","):
                rows.append(one_run(method, epochs, "auto", data, scaling))
                print(json.dumps(rows[-1]), flush=True)
        if not args.no_fp32:
            rows.append(one_run(method, int(args.epochs.split(",")[0]), "fp32", data))
            print(json.dumps(rows[-1]), flush=True)
    load.append(round(os.getloadavg()[0], 2))
    lines = [
        "# The demo's schedule on mini-lt: training accuracy and test accuracy against the number of epochs",
        "",
        f"`nice python experiments/demo_schedule.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"1 thread; load average {load[0]} before, {load[1]} after. Model and settings: {DEMO}; "
        f"seed 0; the long-tailed mini-lt set (IF 100, 2295 images), look {look}.",
        "",
        "Training accuracy (augmented batches) at 40 % / 60 % / 80 % of the schedule (the proportional rule's "
        "first lr drop is at 80 %) and at the end; the last epoch's validation accuracy (mean per class, 10 held-out "
        "images per class); test accuracy (balanced, 2000 images) per split, reported only.",
        "",
        "| method | epochs | scaling | precision | seconds | train acc 40/60/80/100 % | val | test all | many | medium | few |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, val = r["test"], r.get("val_accuracy")
        lines.append(f"| {r['method']} | {r['epochs']} | {r.get('schedule_scaling', 'proportional')} | {r['precision']} | "
                     f"{r['seconds']} | {plateau(r['train_accuracy'])} | {'-' if val is None else f'{100 * val:.1f}'} | "
                     + " | ".join(f"{100 * t[k]:.1f}" if t[k] is not None else "-" for k in (ALL, *SPLITS)) + " |")
    out = Path(args.out)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"load": load, "look": look, "settings": DEMO, "runs": rows},
                                                   indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
