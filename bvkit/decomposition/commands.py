"""``bvkit decompose``: prediction files -> per-class / per-split CSVs (and parquet files when
pyarrow is importable) and a printed table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bvkit.data.profiles import add_split_options
from bvkit.decomposition.compare import compare
from bvkit.decomposition.experts import EXPERT_COLUMNS
from bvkit.decomposition.io import find_prediction_sets
from bvkit.decomposition.population import ESTIMATORS
from bvkit.decomposition.sets import decompose_sets
from bvkit.decomposition.terms import LOSSES
from bvkit.errors import BvkitError

TABLE_COLUMNS = ["method", "loss", "split", "n_classes", "accuracy", "error", "bias", "variance",
                 "net_variance"]
EXPERT_TABLE_COLUMNS = ["method", "loss", "split", "n_classes", *EXPERT_COLUMNS]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "decompose",
        help="bias-variance decomposition of prediction files",
        description=(
            "Decompose each method's error into bias and variance per test sample, then per "
            "class and per shot split (many/medium/few/all). Writes OUT/per_class.csv and "
            "OUT/per_split.csv (long-form), and with --reference also "
            "OUT/comparison_per_class.csv and OUT/comparison_per_split.csv. Inputs holding "
            "expert_logits (multi-expert models such as RIDE) also get the bias-variance-"
            "diversity decomposition of their experts under the squared and cross-entropy "
            "losses asked for: OUT/experts_per_class.csv and OUT/experts_per_split.csv (not for a model "
            "combining its experts with learned expert_weights, such as SADE: a note says so). When "
            "pyarrow is importable, each file also as a .parquet file beside its CSV."
        ),
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="a prediction set (.npz, or a directory of .npy files: labels.npy, one of "
             "logits.npy/probs.npy/preds.npy, optional train_counts.npy, class_names.npy, "
             "expert_logits.npy, expert_weights.npy), or a study directory holding predictions/<method>.npz or predictions/<method>/")
    parser.add_argument("--loss", default="squared",
                        choices=[*LOSSES, "all"],
                        help="loss to decompose (default: squared, the Brier score)")
    parser.add_argument("--out", type=Path, default=Path("decomposition"), metavar="DIR",
                        help="output directory (default: ./decomposition); CSV files, plus "
                             ".parquet copies when pyarrow is importable")
    add_split_options(parser)
    parser.add_argument("--bootstrap", type=int, default=0, metavar="B",
                        help="bootstrap replicates of the test samples for the intervals "
                             "(default 0: none); with the population estimator combined with "
                             "the jackknife over training sets")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="auto",
                        help="population: terms of the population of training sets, corrected "
                             "for finite D (the plug-in beside them as *_plugin); plugin: the "
                             "terms of these D models; auto (default): population when D >= 3")
    parser.add_argument("--bootstrap-models", action="store_true",
                        help="plug-in estimator: also resample the models in each replicate "
                             "(recomputes terms)")
    parser.add_argument("--level", type=float, default=0.95,
                        help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--name", help="method name of a single INPUT (default: its stem)")
    parser.add_argument("--reference", metavar="METHOD",
                        help="also report each method minus METHOD, with paired intervals")
    parser.add_argument("--chunk-size", type=int, metavar="N",
                        help="test samples per chunk (default: about 4 MB of float32 scores)")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="threads (default: the CPUs available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sets = [s for path in args.inputs for s in find_prediction_sets(path)]
    if args.name and len(sets) != 1:
        raise BvkitError(f"--name names one prediction set, but the inputs hold {len(sets)}")
    if args.jobs is not None and args.jobs < 1:
        raise BvkitError(f"--jobs must be at least 1, got {args.jobs}")
    options = dict(loss=args.loss, many=args.many, few=args.few, bootstrap=args.bootstrap,
                   bootstrap_models=args.bootstrap_models, level=args.level, seed=args.seed,
                   chunk_size=args.chunk_size, n_jobs=args.jobs, estimator=args.estimator)
    result = decompose_sets(sets, name=args.name, **options)
    comparison = None
    if args.reference:
        comparison = compare(result, args.reference, bootstrap=args.bootstrap, seed=args.seed,
                             level=args.level)

    frames = {"per_class": result.per_class, "per_split": result.per_split}
    if comparison is not None:
        frames.update(comparison_per_class=comparison.per_class,
                      comparison_per_split=comparison.per_split)
    if result.experts is not None:
        frames.update(experts_per_class=result.experts.per_class,
                      experts_per_split=result.experts.per_split)
    written = write_frames(frames, args.out)

    estimators = {m: (s.get("estimator"), s.get("n_models")) for m, s in result.settings.items()}
    print(table(result.per_split))
    for method, (estimator, n_models) in estimators.items():
        print(f"{method}: {ESTIMATOR_NOTES[estimator].format(d=n_models)}")
    if comparison is not None:
        print(f"\ndifference to {args.reference}:")
        print(table(comparison.per_split.drop(columns="reference")))
    if result.experts is not None:
        print("\nexperts (ensemble_loss = average_bias + average_variance - diversity):")
        print(table(result.experts.per_split, EXPERT_TABLE_COLUMNS))
    skipped = [m for m, s in result.settings.items() if s.get("expert_loss") == []]
    if skipped:
        print(f"note: {', '.join(skipped)}: expert logits not decomposed: zero-one has no "
              f"bias-variance-diversity decomposition (use --loss squared, cross-entropy or all)",
              file=sys.stderr)
    for method in (m for m, s in result.settings.items() if s.get("weighted_experts")):
        print(f"note: {method}: experts combined with learned weights (expert_weights); the expert "
              f"decomposition needs equal weights: skipped", file=sys.stderr)
    print(f"\nwrote {', '.join(str(path) for path in written)}")
    return 0


ESTIMATOR_NOTES = {
    "population": "population estimator over D = {d} training sets (finite-D corrected by the "
                  "jackknife; plug-in terms as *_plugin; intervals over training sets and test "
                  "samples)",
    "plugin": "plug-in terms of these D = {d} models (intervals over test samples only)",
}


def write_frames(frames: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """Write each frame as ``out/<name>.csv``, and as ``out/<name>.parquet`` when pyarrow is
    importable (parquet keeps the dtypes a CSV loses); return the paths written."""
    writers = {".csv": pd.DataFrame.to_csv}
    try:
        import pyarrow  # noqa: F401 - only whether it is there
    except ImportError:
        pass
    else:
        writers[".parquet"] = pd.DataFrame.to_parquet
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            for suffix, write in writers.items():
                write(frame, out / f"{name}{suffix}", index=False)
                written.append(out / f"{name}{suffix}")
    except OSError as err:
        raise BvkitError(f"cannot write to {out}: {err.strerror or err}") from None
    return written


def table(per_split: pd.DataFrame, columns=TABLE_COLUMNS) -> str:
    """Compact text table of a per-split frame (intervals stay in the CSV files)."""
    cols = [c for c in columns if c in per_split.columns]
    frame = per_split[cols]
    if "net_variance" in frame and frame["net_variance"].isna().all():
        frame = frame.drop(columns="net_variance")
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
