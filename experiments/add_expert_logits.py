"""Give a finished study's multi-expert runs their experts' test logits, from the weights they
kept, instead of retraining them: for runs made before runs recorded ``expert_logits``.

For every finished run whose model has experts (RIDE) and whose stage-one weights are in the
study (its own ``checkpoint.pt``, or that of the run whose stage one it reused: ride-ea's
routers run on ride's experts unchanged), the experts' test logits are recomputed at the run's
precision and checked against the logits the run recorded (their mean, or a router's prefix
mean, within ``bvkit.decomposition.experts.EXPERT_MEAN_TOLERANCE``); the run's predictions.npz
is then rewritten with them, everything else byte for byte the same arrays. Then
``bvkit study gather DIR`` stacks them into predictions/<method>.npz.

    BVKIT_DATA=data-cache python experiments/add_expert_logits.py experiments/results/cifar10_lt_study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bvkit.decomposition.experts import check_expert_inputs
from bvkit.methods import Recipe
from bvkit.predictions import save_predictions
from bvkit.study import load_study
from bvkit.study.planning import make_subsets
from bvkit.train.builders import build_model
from bvkit.train.checkpoint import load_checkpoint, load_state
from bvkit.train.data import make_augment, make_normalizer, to_device
from bvkit.train.devices import resolve_precision
from bvkit.train.evaluation import experts_forward
from bvkit.train.loop import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    study = load_study(args.study)
    spec = study.spec
    source, _ = make_subsets(spec)  # the study's long-tailed set, as its runs loaded it
    images, _ = to_device(source.test, device)
    runs = Path(args.study) / "runs"
    done = study.metrics[study.metrics["status"] == "done"]
    for row in done.itertuples():
        run = runs / row.run_id
        weights_from = runs / (row.stage_one if isinstance(row.stage_one, str) and row.stage_one else row.run_id)
        if not (weights_from / "checkpoint.pt").is_file():
            continue
        payload = load_checkpoint(weights_from / "checkpoint.pt")
        recipe = Recipe.from_dict(payload["recipe"])
        precision = resolve_precision(recipe.precision, device)  # as the run evaluated
        model = build_model(recipe, len(source.class_names), 3, row.seed, device)
        load_state(model, payload["model"], "stage-one model")
        forward = experts_forward(model.eval())
        if forward is None:
            continue
        with np.load(run / "predictions.npz", allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        if "expert_logits" in arrays:
            print(f"{row.method} subset {row.subset}: has expert_logits already")
            continue
        normalizer = make_normalizer(make_augment(recipe, source))
        experts = predict(forward, images, normalizer, device, precision=precision)["expert_logits"].numpy().transpose(1, 0, 2)
        experts = experts[None].astype(np.float32)  # (1, M, N, C)
        pair = np.concatenate([arrays["logits"]] * 2), np.concatenate([experts] * 2)  # D >= 2 for the check
        routed = check_expert_inputs(pair[1], arrays["labels"], pair[0], routed=None)
        save_predictions(run / "predictions.npz", labels=arrays["labels"], logits=arrays["logits"],
                         train_counts=arrays.get("train_counts"), class_names=arrays.get("class_names"),
                         expert_logits=experts)
        print(json.dumps({"method": row.method, "subset": int(row.subset), "run": row.run_id,
                          "weights": weights_from.name, "experts": int(experts.shape[1]), "routed": routed,
                          "mean_vs_logits_max_abs": float(np.abs(experts[0].mean(0) - arrays["logits"][0]).max())}),
              flush=True)


if __name__ == "__main__":
    main()
