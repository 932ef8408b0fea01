"""RIDE's experts one by one: each expert alone, and their mean (RIDE's output), on the test set,
for every finished RIDE stage one of a study that kept its checkpoint (those that ride-ea reuses).

Does the ensemble add over its experts, and how does one expert compare with a single ResNet-32
(the study's ldam-drw, same subset)? Test accuracy overall and per shot split, for the default
split and ``--many``/``--few``; the shot splits come from the long-tailed set's counts, as in the
study. Writes a markdown table to ``--out``.

    BVKIT_DATA=data-cache python experiments/ride_experts.py experiments/results/cifar10_lt_study \\
        --many 1000 --few 200 --out experiments/results/cifar10_lt_study_ride_experts.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bvkit.data import make_long_tailed
from bvkit.data.profiles import ALL, SPLITS, shot_splits, split_means
from bvkit.methods import Recipe
from bvkit.study import load_study
from bvkit.train.builders import build_model
from bvkit.train.checkpoint import load_checkpoint, load_state
from bvkit.train.data import prepare_data
from bvkit.train.metrics import per_class_accuracy
from bvkit.report.tables import to_markdown


def split_row(preds, labels, counts, many, few) -> dict:
    means = split_means(per_class_accuracy(preds, labels, len(counts)), shot_splits(counts, many, few))
    return {k: (None if means[k] is None else round(100 * means[k], 2)) for k in (ALL, *SPLITS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--many", type=int, default=100)
    parser.add_argument("--few", type=int, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_study(args.study).spec
    device = torch.device("cpu")
    runs = [json.loads(path.read_text()) for path in sorted(Path(args.study).glob("runs/*/run.json"))]
    rows = []
    for run in (r for r in runs if r["recipe"] == "ride"):  # finished RIDE stage ones (run.json: done)
        checkpoint = Path(args.study) / "runs" / run["run_id"] / "checkpoint.pt"
        if not checkpoint.is_file():
            continue
        payload = load_checkpoint(checkpoint)
        recipe = Recipe.from_dict(payload["recipe"])
        source = make_long_tailed(spec.data.dataset, imbalance=spec.data.imbalance, profile=spec.data.profile,
                                  root=spec.data.root, **({"n_max": spec.data.n_max} if spec.data.n_max else {}))
        data = prepare_data(source, recipe, run["seed"], device)
        model = build_model(recipe, len(data.class_names), data.in_channels, run["seed"], device)
        load_state(model, payload["model"], "RIDE model")
        model.eval()
        outputs = data.predict(lambda x: {"experts": model.forward_experts(x)["expert_logits"].transpose(0, 1)}, "test")
        experts = outputs["experts"].numpy()  # (N, E, C)
        labels, counts = data.labels("test"), np.asarray(source.counts)
        for e in range(experts.shape[1]):
            rows.append({"run": run["run_id"], "subset": run["subset"], "model": f"expert {e + 1} alone",
                         **split_row(experts[:, e].argmax(1), labels, counts, args.many, args.few)})
        rows.append({"run": run["run_id"], "subset": run["subset"], "model": "mean of the experts (RIDE)",
                     **split_row(experts.mean(1).argmax(1), labels, counts, args.many, args.few)})
        for other in (r for r in runs if r["recipe"] == "ldam-drw" and r["subset"] == run["subset"]):
            logits = np.load(Path(args.study) / "runs" / other["run_id"] / "predictions.npz")["logits"][0]
            rows.append({"run": other["run_id"], "subset": run["subset"], "model": "ldam-drw (one ResNet-32)",
                         **split_row(logits.argmax(1), labels, counts, args.many, args.few)})
        print(json.dumps(rows[-1]), flush=True)
    import pandas as pd

    text = (f"# RIDE-3's experts one by one ({args.study})\n\n`python experiments/ride_experts.py {args.study} "
            f"--many {args.many} --few {args.few}`: test accuracy (%), mean of per-class accuracy, shot splits "
            f"many > {args.many}, few < {args.few} training images.\n\n" + to_markdown(pd.DataFrame(rows)) + "\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
