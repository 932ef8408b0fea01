"""Does a run's validation set behave like the pool it was drawn from? For every finished run of
a study that kept its stage-one weights (the backbones cRT, tau-norm and the routers reuse), the
model's accuracy on

* its own validation draw (the images ``bvkit.train.data.validation_split`` held out for it) and
  its check draw (the 500 unused pool images per class that follow in the same random order,
  ``bvkit.train.evaluation.validation_check``): a defect in what touches the validation images
  would make the first higher for every model;
* a reference draw (``--reference-seed``: the validation images of a plain ``bvkit train`` run
  with that seed on the default long-tailed set) restricted to the images outside the model's
  own training set, against the check draw less those images: if the reference draw is easier
  for models trained on other sets too, the draw itself is easy, whatever the run;
* the test set.

Classes whose pool is all in the training set (the head class) have no unused image and are left
out of every column but test. Mean per-class accuracy, %, with the z of each comparison
(``bvkit.train.evaluation.check_statistic``). Evaluation only: bf16 as the runs, one thread.

    BVKIT_DATA=data-cache python experiments/validation_draws.py experiments/results/cifar10_lt_study \\
        --out experiments/results/validation_draws_40.md
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bvkit.data import holdout_indices
from bvkit.methods import Recipe
from bvkit.study import load_study
from bvkit.study.planning import make_subsets
from bvkit.train.builders import build_model
from bvkit.train.checkpoint import load_checkpoint, load_state
from bvkit.train.data import make_augment, make_normalizer, to_device
from bvkit.train.devices import resolve_precision
from bvkit.train.evaluation import check_statistic
from bvkit.train.loop import predict


def hits(model, pool, indices, normalizer, device, precision) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (hits, totals) of ``model`` on pool images ``indices``."""
    x, y = to_device(pool.subset(indices), device)
    logits = predict(model, x, normalizer, device, precision=precision)["logits"]
    labels = y.numpy()
    n = len(pool.class_names)
    return (np.bincount(labels, weights=(logits.argmax(1).numpy() == labels), minlength=n),
            np.bincount(labels, minlength=n).astype(float))


def compare(a, b) -> dict:
    stat = check_statistic(*a, *b)
    return {"a": round(100 * stat["val_accuracy"], 2), "b": round(100 * stat["check_accuracy"], 2),
            "z": round(stat["z"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--reference-seed", type=int, default=0)
    parser.add_argument("--check-per-class", type=int, default=500)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    study = load_study(args.study)
    spec = study.spec
    source, _ = make_subsets(spec)  # the study's long-tailed set, as its runs loaded it
    rows = []
    for path in sorted(Path(args.study).glob("runs/*/run.json")):
        run = json.loads(path.read_text())
        checkpoint = path.parent / "checkpoint.pt"
        if not checkpoint.is_file():
            continue
        payload = load_checkpoint(checkpoint)
        recipe = Recipe.from_dict(payload["recipe"])
        precision = resolve_precision(recipe.precision, device)  # as the run evaluated
        data = replace(source, train_indices=study.subsets[run["subset"]])
        normalizer = make_normalizer(make_augment(recipe, source))
        model = build_model(recipe, len(source.class_names), 3, run["seed"], device)
        load_state(model, payload["model"], "stage-one model")
        model.eval()
        own = holdout_indices(data, recipe.val_per_class, run["seed"])
        check = holdout_indices(data, args.check_per_class, run["seed"], skip=recipe.val_per_class)
        reference = holdout_indices(source, recipe.val_per_class, args.reference_seed)
        unused = np.setdiff1d(np.arange(len(source.pool)), data.train_indices)
        reference_out = np.intersect1d(reference, unused)
        others = np.setdiff1d(check, reference)
        score = {name: hits(model, source.pool, idx, normalizer, device, precision)
                 for name, idx in (("own", own), ("check", check), ("reference", reference_out), ("others", others))}
        test_logits = predict(model, *to_device(source.test, device)[:1], normalizer, device, precision=precision)["logits"]
        test_labels = np.asarray(source.test.labels)
        per_class = [np.mean(test_logits.argmax(1).numpy()[test_labels == c] == c) for c in range(len(source.class_names))]
        own_vs_check = compare(score["own"], score["check"])
        reference_vs_others = compare(score["reference"], score["others"])
        rows.append({"run": run["run_id"], "subset": run["subset"], "epochs": payload.get("stage_epochs"),
                     "own val": own_vs_check["a"], "check": own_vs_check["b"], "z own-check": own_vs_check["z"],
                     "reference (unused)": reference_vs_others["a"], "n ref": int(score["reference"][1].sum()),
                     "check less ref": reference_vs_others["b"], "z ref-others": reference_vs_others["z"],
                     "test": round(100 * float(np.mean(per_class)), 2)})
        print(json.dumps(rows[-1]), flush=True)
    import pandas as pd

    from bvkit.report.tables import to_markdown

    frame = pd.DataFrame(rows)
    text = (f"# Validation draws against the pool ({args.study})\n\n`python experiments/validation_draws.py "
            f"{args.study} --reference-seed {args.reference_seed}`; accuracies in %, mean per class over the "
            f"classes with unused pool images; z as in `bvkit.train.evaluation.check_statistic`.\n\n"
            + to_markdown(frame) + "\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
