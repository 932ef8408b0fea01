"""The training cost of study specs before and after stage-one sharing, from their plans alone
(nothing is trained): trainings, and image-passes (training images x epochs, summed over the
stage-one and second-stage trainings).

    .venv/bin/python experiments/study_cost.py experiments/cifar10_lt_bias_variance.toml \
        experiments/cifar100_lt_bias_variance.toml > experiments/results/study_cost.txt

"Before" is every run training its own stage one; "after" is the plan of
``bvkit.study.planning`` (a two-stage run reuses the stage one of the same subset and seed
with the same stage-one recipe). A run's training images are those training sees: its subset
less the validation images carved out of it (``bvkit.train.data.validation_split``); an
epoch passes all of them (a class-balanced loader draws as many), less one when the last batch
would hold a single image. A second-stage image-pass is a forward through the frozen
backbone plus a head update, far cheaper than a stage-one pass; tau-norm trains no epoch.

The images come from the real data when it is on disk (``$BVKIT_DATA``), else from a
label-only stand-in of the balanced pool (the dataset's per-class pool size, one pixel per
image: the counting needs no pixels); where the real data exists both are computed and must
agree.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np

from bvkit.data import ImageSet, LongTailed, dataset_spec, long_tail_counts, long_tailed_indices
from bvkit.errors import BvkitError
from bvkit.methods import create_method
from bvkit.study.planning import make_subsets, plan_runs, unique_runs
from bvkit.study.spec import load_spec
from bvkit.train.data import validation_split


def label_only_data(spec) -> LongTailed:
    """The spec's long-tailed set over a pool of labels only (1x1 images)."""
    info = dataset_spec(spec.data.dataset)
    n_max = spec.data.n_max or info.n_max
    per_class = max(n_max, info.n_max)  # the pool's images per class (CIFAR: 5000 / 500)
    labels = np.repeat(np.arange(info.n_classes), per_class)
    names = [str(c) for c in range(info.n_classes)]
    pool = ImageSet(np.zeros((len(labels), 1, 1, 1), np.uint8), labels, names)
    counts = long_tail_counts(n_max, info.n_classes, spec.data.imbalance, spec.data.profile)
    return LongTailed(spec.data.dataset, pool, pool.subset([]), long_tailed_indices(labels, counts, spec.data.seed),
                      counts, spec.data.imbalance, spec.data.profile, spec.data.seed, (0.0,), (1.0,))


def images_per_epoch(n: int, batch_size: int) -> int:
    return n - 1 if n % batch_size == 1 else n  # bvkit.train.data.make_loader drops a last batch of one


def run_costs(spec, data, subsets) -> list[dict]:
    """Per unique planned run: its label, whether it reuses a stage one, and its image-passes."""
    rows = []
    for task in unique_runs(plan_runs(spec, subsets)):
        recipe = create_method(task.method, dataset=spec.data.dataset, **task.overrides)
        if recipe.procedure is not None:
            raise BvkitError(f"{task.label}: procedure {recipe.procedure}'s passes are not modelled here")
        subset_data = replace(data, train_indices=subsets[task.subset])
        n = len(validation_split(subset_data, recipe.val_per_class, task.seed)[0])
        rows.append({
            "label": task.label, "images": n, "reuses": task.stage_one.label if task.stage_one else None,
            "stage_one": images_per_epoch(n, recipe.batch_size) * recipe.epochs,
            "stages": [(stage.kind, stage.epochs, images_per_epoch(n, stage.batch_size) * stage.epochs)
                       for stage in recipe.stages],
        })
    return rows


def report(path: str) -> str:
    spec = load_spec(path)
    stand_in = label_only_data(spec)
    rows = run_costs(spec, stand_in, make_subsets(spec, stand_in)[1])
    source = "a label-only stand-in of the pool (the data is not on disk)"
    try:
        data, subsets = make_subsets(spec)
    except BvkitError:
        pass
    else:
        real = run_costs(spec, data, subsets)
        if real != rows:
            raise SystemExit(f"{path}: the stand-in's counts differ from the real data's")
        source = "the real data (the label-only stand-in gives the same counts)"
    trained_own = [r for r in rows if r["reuses"] is None]
    stage_one = {"before": sum(r["stage_one"] for r in rows), "after": sum(r["stage_one"] for r in trained_own)}
    second = sum(passes for r in rows for _, _, passes in r["stages"])
    second_runs = sum(bool(r["stages"]) for r in rows)
    images = sorted({r["images"] for r in rows})
    labels = [m.name for m in spec.methods]
    kinds = {}
    for r in rows:
        for kind, epochs, _ in r["stages"]:
            kinds.setdefault((r["label"], kind, epochs), 0)
            kinds[(r["label"], kind, epochs)] += 1
    shared = sorted({(r["label"], r["reuses"]) for r in rows if r["reuses"]})
    lines = [
        f"{path}: {spec.data.dataset}, IF {spec.data.imbalance:g}, D = {spec.n_subsets} "
        f"({spec.subsets.scheme}), methods {', '.join(labels)}",
        f"  training images per run: {', '.join(map(str, images))}; from {source}",
        "  second stages: " + (", ".join(f"{label} ({kind}, {epochs} epochs) x {count} runs"
                                          for (label, kind, epochs), count in kinds.items()) or "none"),
        "  sharing (per subset): " + (", ".join(f"{a} reuses {b}'s stage one" for a, b in shared) or "none"),
        f"  {'':28s}{'before':>14s}{'after':>14s}{'after/before':>14s}",
    ]
    table = [
        ("runs", len(rows), len(rows)),
        ("stage-one trainings", len(rows), len(trained_own)),
        ("second-stage runs", second_runs, second_runs),
        ("image-passes, stage one", stage_one["before"], stage_one["after"]),
        ("image-passes, second stages", second, second),
        ("image-passes, all", stage_one["before"] + second, stage_one["after"] + second),
    ]
    for name, before, after in table:
        lines.append(f"  {name:28s}{before:>14,d}{after:>14,d}{after / before:>14.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+", help="study spec files (.toml)")
    args = parser.parse_args(argv)
    try:
        print("\n\n".join(report(path) for path in args.specs))
    except BvkitError as err:
        print(f"study_cost: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
