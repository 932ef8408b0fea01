"""Long-tailed data: count profiles and shot splits, image sources, long-tailed sets,
training-subset samplers and (torch) loaders.

Everything but the loaders is numpy only; ``bvkit.data.loaders`` (and the names it exports
here) imports torch on first use.
"""

from bvkit.data.file_lists import (
    FILE_LIST_DATASETS,
    FileList,
    FileListBenchmark,
    list_benchmarks,
    load_benchmark,
    load_file_list,
    parse_file_list,
)
from bvkit.data.imageset import ImageSet
from bvkit.data.long_tailed import (
    CIFAR_MEAN,
    CIFAR_STD,
    DATASETS,
    LongTailed,
    channel_stats,
    dataset_spec,
    list_datasets,
    long_tailed_indices,
    make_long_tailed,
)
from bvkit.data.profiles import (
    PROFILES,
    SPLITS,
    empty_splits,
    long_tail_counts,
    shot_splits,
    split_accuracy,
    split_sizes,
)
from bvkit.data.sources import (
    data_root,
    list_sources,
    load_source,
    read_idx,
    register_source,
)
from bvkit.data.subsets import (
    holdout_indices,
    list_schemes,
    load_subsets,
    sample_subsets,
    save_subsets,
)

_LOADERS = (
    "Augment", "BalancedSampler", "DeviceLoader", "EpochBatchSampler", "FileListDataset",
    "FileListLoader", "IMAGENET_MEAN",
    "IMAGENET_STD", "balanced_indices", "epoch_generator", "EpochPlan", "file_list_loader",
    "imagenet_transform", "normalize", "random_crop", "random_crop_flip_rotate",
    "to_device",
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "FILE_LIST_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROFILES",
    "SPLITS",
    "Augment",
    "BalancedSampler",
    "DeviceLoader",
    "EpochBatchSampler",
    "EpochPlan",
    "FileList",
    "FileListBenchmark",
    "FileListDataset",
    "FileListLoader",
    "ImageSet",
    "LongTailed",
    "balanced_indices",
    "channel_stats",
    "data_root",
    "dataset_spec",
    "empty_splits",
    "epoch_generator",
    "file_list_loader",
    "holdout_indices",
    "imagenet_transform",
    "list_benchmarks",
    "list_datasets",
    "list_schemes",
    "list_sources",
    "load_benchmark",
    "load_file_list",
    "load_source",
    "load_subsets",
    "long_tail_counts",
    "long_tailed_indices",
    "make_long_tailed",
    "normalize",
    "parse_file_list",
    "random_crop",
    "random_crop_flip_rotate",
    "read_idx",
    "register_source",
    "sample_subsets",
    "save_subsets",
    "shot_splits",
    "split_accuracy",
    "split_sizes",
    "to_device",
]


def __getattr__(name):
    if name in _LOADERS:
        from bvkit.data import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'bvkit.data' has no attribute {name!r}")
