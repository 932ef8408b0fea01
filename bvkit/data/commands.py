"""``bvkit data describe``: per-class counts and shot splits of a long-tailed dataset;
``bvkit data fetch``: download CIFAR-10 / CIFAR-100 into the data root.

Counts follow from the profile alone, so describing CIFAR-LT needs no data on disk; only
the class names come from the files (indices stand in when they are absent).
"""

from __future__ import annotations

import json

import numpy as np

from bvkit.data.file_lists import FILE_LIST_DATASETS, find_list_folder, parse_file_list
from bvkit.data.long_tailed import dataset_spec, list_datasets
from bvkit.data.profiles import (
    FEW_SHOT,
    MANY_SHOT,
    PROFILES,
    SPLITS,
    add_split_options,
    empty_splits,
    long_tail_counts,
    shot_splits,
    split_sizes,
)
from bvkit.data.sources import (
    CIFAR,
    FASHION_MNIST_CLASSES,
    cifar_class_names,
    data_root,
    fetch_cifar,
)
from bvkit.errors import BvkitError


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="long-tailed datasets: counts, splits, sources")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    describe = commands.add_parser(
        "describe", help="per-class training counts and shot splits of a long-tailed dataset",
        description="Per-class training counts and shot splits. Datasets: "
        f"{', '.join(list_datasets())}; imagenet-lt, inat2018 (their training list under --data-root); "
        "or any name with --list FILE (a 'path label' list).")
    describe.add_argument("dataset", metavar="DATASET")
    describe.add_argument("--imbalance", type=float, default=100.0, help="imbalance factor (default 100)")
    describe.add_argument("--profile", choices=PROFILES, default="exp")
    describe.add_argument("--n-max", type=int, default=None, help="head-class count (default: the benchmark's)")
    add_split_options(describe)
    describe.add_argument("--list", dest="list_path", metavar="FILE",
                          help="describe the training list FILE ('relative/path label' per line)")
    describe.add_argument("--data-root", default=None, help="data root (default $BVKIT_DATA or the user cache)")
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(func=describe_command)
    fetch = commands.add_parser(
        "fetch", help="download CIFAR-10 or CIFAR-100 into the data root",
        description="Download the python release of CIFAR-10 or CIFAR-100 (train and test) "
        "with torchvision into the data root, where every bvkit command looks for it. Files "
        "already there with the official md5 are kept; others are downloaded again.")
    fetch.add_argument("dataset", choices=sorted(CIFAR), metavar="DATASET",
                       help=f"one of {', '.join(sorted(CIFAR))}")
    fetch.add_argument("--data-root", default=None, help="data root (default $BVKIT_DATA or the user cache)")
    fetch.set_defaults(func=fetch_command)


def describe_dataset(dataset: str, imbalance: float = 100.0, profile: str = "exp",
                     many: int = MANY_SHOT, few: int = FEW_SHOT, root=None, n_max: int | None = None,
                     list_path=None) -> dict:
    """Counts, class names and shot splits of a long-tailed dataset (or of a file list)."""
    if list_path is None and dataset in FILE_LIST_DATASETS:  # imagenet-lt, inat2018: the training list
        list_path = find_list_folder(dataset, root) / FILE_LIST_DATASETS.get(dataset).train
    if list_path is not None:
        _, labels = parse_file_list(list_path)
        counts = np.bincount(labels).astype(np.int64)
        names = [str(c) for c in range(len(counts))]
        info = {"dataset": dataset, "list": str(list_path)}
    else:
        spec = dataset_spec(dataset)
        n_max = spec.n_max if n_max is None else n_max
        counts = long_tail_counts(n_max, spec.n_classes, imbalance, profile)
        names = _class_names(spec.source, spec.n_classes, root)
        info = {"dataset": dataset, "profile": profile, "imbalance": float(imbalance), "n_max": int(n_max)}
    splits = shot_splits(counts, many=many, few=few)
    return {
        **info,
        "n_classes": len(counts),
        "counts": [int(n) for n in counts],
        "total": int(counts.sum()),
        "splits": split_sizes(splits),
        "empty_splits": empty_splits(splits),
        "thresholds": {"many": many, "few": few},
        "class_names": names,
        "class_splits": [str(s) for s in splits],
    }


def _class_names(source: str, n_classes: int, root) -> list[str]:
    if source in CIFAR:
        try:
            names = cifar_class_names(source, root)
        except BvkitError:
            names = None
        if names and len(names) == n_classes:
            return names
    elif source == "fashion-mnist":
        return list(FASHION_MNIST_CLASSES)
    elif source == "synthetic":
        return [f"class{c}" for c in range(n_classes)]
    return [str(c) for c in range(n_classes)]


def describe_command(args) -> int:
    info = describe_dataset(args.dataset, args.imbalance, args.profile, args.many, args.few,
                            args.data_root, args.n_max, args.list_path)
    if args.json:
        print(json.dumps(info))
        return 0
    if "list" in info:
        print(f"{info['dataset']}: {info['list']}, {info['n_classes']} classes, "
              f"{info['total']} training images")
    else:
        print(f"{info['dataset']}: {info['profile']} profile, imbalance {info['imbalance']:g}, "
              f"n_max {info['n_max']}, {info['n_classes']} classes, {info['total']} training images")
    sizes = ", ".join(f"{name} {info['splits'][name]}" for name in SPLITS)
    print(f"shot splits (many > {args.many}, medium {args.few}..{args.many}, few < {args.few}): {sizes}")
    if info["empty_splits"]:
        print(f"empty splits: {', '.join(info['empty_splits'])}")
    width = max(5, max(len(n) for n in info["class_names"]))
    print(f"{'class':>5}  {'name':<{width}}  {'count':>6}  split")
    for c, (name, count, split) in enumerate(zip(info["class_names"], info["counts"], info["class_splits"])):
        print(f"{c:>5}  {name:<{width}}  {count:>6}  {split}")
    return 0


def fetch_command(args) -> int:
    print(f"fetching {args.dataset} into {data_root(args.data_root)}")
    print(f"{args.dataset} ready in {fetch_cifar(args.dataset, args.data_root)}")
    return 0
