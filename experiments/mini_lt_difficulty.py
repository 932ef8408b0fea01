"""How hard is mini-lt? The demo's model trained with CE on the balanced pool (IF 1) and on the
long-tailed set (IF 100) for candidate looks of the generator, to choose the look by what a
miniature of CIFAR-100-LT should show, never by which method wins (only CE is trained here):

  1. balanced, a converged model is far from perfect, as ResNet-32 on CIFAR-100 (about 0.7);
  2. long-tailed, CE learns the head well and the tail partly (few-shot clearly above 0);
  3. training accuracy levels off before the schedule ends.

Per run: test accuracy overall and per split, and the training accuracy at 40 / 60 / 80 / 100 %
of the schedule (lr x0.01 from 80 %). One torch thread, seed 0.

    nice python experiments/mini_lt_difficulty.py --looks '{"modes": 3, "noise": 0.1, "distractor": 0.2}' \\
        --epochs 30 --batch-size 64 --out experiments/results/mini_lt_difficulty
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bvkit.data import make_long_tailed
from bvkit.data.profiles import ALL, SPLITS
from bvkit.data.synthetic import MINI_LT
from bvkit.train import train


def marks(curve: list[float]) -> str:
    n = len(curve)
    return " / ".join(f"{curve[max(1, round(n * f)) - 1]:.2f}" for f in (0.4, 0.6, 0.8, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--looks", nargs="+", default=[json.dumps({k: v for k, v in MINI_LT.items() if k != "size"})],
                        help="JSON objects of generator settings over mini-lt's (modes, noise, distractor)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--imbalances", default="1,100")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--padding", type=int, default=4, help="random-crop padding (the recipes' 4 is 1/8 of CIFAR's 32 px)")
    parser.add_argument("--out", default="experiments/results/mini_lt_difficulty")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the .json, train nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = {"model_kwargs.width": args.width, "model_kwargs.blocks": 1, "val_per_class": 10,
                "batch_size": args.batch_size, "lr": 0.1, "epochs": args.epochs, "precision": args.precision,
                "augment.crop_padding": args.padding}
    out = Path(args.out)
    rows = json.loads(out.with_suffix(".json").read_text())["runs"] if out.with_suffix(".json").exists() else []
    load_before = round(os.getloadavg()[0], 2)
    for look_text in [] if args.report_only else args.looks:
        look = {**MINI_LT, **json.loads(look_text)}
        for imbalance in (float(i) for i in args.imbalances.split(",")):
            data = make_long_tailed("mini-lt", imbalance=imbalance, **look)
            started = time.perf_counter()
            result = train("ce", data, seed=0, device="cpu", progress=False, **settings)
            curve = [row["accuracy"] for row in result.history]
            rows.append({"look": look, "imbalance": imbalance, "n_train": int(sum(data.counts)),
                         "settings": settings, "seconds": round(time.perf_counter() - started, 1),
                         "train_accuracy": [round(a, 4) for a in curve],
                         "test": {k: result.metrics["accuracy"][k] for k in (ALL, *SPLITS)},
                         "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "load": [load_before, round(os.getloadavg()[0], 2)]})
            print(json.dumps(rows[-1]), flush=True)
            out.with_suffix(".json").write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    lines = ["# mini-lt's difficulty: CE with the demo's model on candidate looks (experiments/mini_lt_difficulty.py)", "",
             "One torch thread, seed 0, CIFAR ResNet with one block per stage, lr 0.1, the step schedule "
             "(lr x0.01 from 80 % of the epochs), crop + flip. Test: balanced, 100 images per class. "
             "Train acc.: augmented batches at 40 / 60 / 80 / 100 % of the schedule.", "",
             "| modes | noise | distractor | width | pad | batch | epochs | IF | images | test all | many | medium | few "
             "| train acc. 40/60/80/100 % | s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        look, s, t = r["look"], r["settings"], r["test"]
        cells = [look["modes"], look["noise"], look["distractor"], s["model_kwargs.width"], s.get("augment.crop_padding", 4),
                 s["batch_size"], s["epochs"],
                 f"{r['imbalance']:g}", r["n_train"]]
        cells += [f"{t[k]:.3f}" if t[k] is not None else "" for k in (ALL, *SPLITS)]
        cells += [marks(r["train_accuracy"]), r["seconds"], f"{r['load'][0]}-{r['load'][1]}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows):]))


if __name__ == "__main__":
    main()
