"""A run's data: its training, validation and test parts behind one small interface (a
training loader, predictions over a part, its labels), for the two kinds of dataset.

* :class:`DeviceData`: a long-tailed set cut from a balanced pool (CIFAR-LT, Fashion-MNIST-LT,
  synthetic-lt), held on the device as uint8 and augmented there in batches;
* :class:`ListData`: a file-list benchmark (``imagenet-lt``, ``inat2018``; ``bvkit.data.load_benchmark``),
  decoded by DataLoader workers with RIDE's ImageNet transforms. Validation: ImageNet-LT's val
  list (20 per class); iNat 2018 ships none, so up to ``val_per_class`` images of each class (at
  most a fifth of it) are held out of the training list; the test set is ImageNet-LT's test list,
  iNat's official val list. Under torchrun each rank loads only its slice of every batch and
  evaluation is split over the ranks and gathered.

The validation split never touches the test set (``validation_split``, ``docs/subsets.md``). A
device-resident set also holds a *check* part: up to ``CHECK_PER_CLASS`` further unused pool
images per class, drawn like the validation images and disjoint from them, evaluated once at the
end of a run to test that the validation set behaves like the pool it was drawn from
(``bvkit.train.evaluation.validation_check``); nothing is ever chosen on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from bvkit.data import (
    DATASETS,
    FILE_LIST_DATASETS,
    Augment,
    DeviceLoader,
    FileListBenchmark,
    file_list_loader,
    holdout_indices,
    imagenet_transform,
    list_benchmarks,
    list_datasets,
    load_benchmark,
    make_long_tailed,
    normalize,
    to_device,
)
from bvkit.errors import BvkitError
from bvkit.methods import Recipe
from bvkit.train import ddp
from bvkit.train.devices import resolve_precision
from bvkit.train.loop import module_of, predict, predict_batches

EVAL_BATCH = 256
CHECK_PER_CLASS = 500  # unused pool images per class that check the validation set (where the pool has them)
LIST_AUGMENT = ("size", "resize")


@dataclass
class Tensors:
    x: torch.Tensor
    y: torch.Tensor


@dataclass
class DeviceData:
    """A long-tailed set held on the device: training, validation and check images cut from
    the pool, and the balanced test set, all uint8 ``Tensors``."""

    name: str
    class_names: list
    counts: np.ndarray  # long-tailed training counts: shot splits, the prediction file's train_counts
    train_counts: np.ndarray | None  # images per class actually trained on (validation carved out)
    train_set: Tensors | None
    val_set: Tensors | None
    test_set: Tensors | None
    augment: Any
    normalizer: Callable
    device: torch.device
    long_tailed: Any = None  # the LongTailed (procedures)
    train_idx: np.ndarray | None = None  # into long_tailed.pool
    val_idx: np.ndarray | None = None
    check_set: Tensors | None = None  # unused pool images beyond the validation draw (module doc)
    check_idx: np.ndarray | None = None
    precision: str = "fp32"  # the run's (``bvkit.train.devices``): what its predictions compute in

    @property
    def in_channels(self) -> int:
        return int(self.test_set.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.test_set.x.shape[-1])

    def part(self, name: str) -> Tensors:
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set, "check": self.check_set}[name]

    def size(self, name: str) -> int:
        part = self.part(name)
        return 0 if part is None else len(part.y)

    def labels(self, name: str) -> np.ndarray:
        return self.part(name).y.cpu().numpy()

    def train_loader(self, batch_size: int, balanced: bool, seed: int, shard: bool = True):
        """Under DDP every rank walks the same batches; ``train_phase`` slices them (``shard``)."""
        return make_loader(self.train_set, batch_size, balanced, self.augment, seed)

    def predict(self, forward, name: str) -> dict[str, torch.Tensor]:
        return predict(forward, self.part(name).x, self.normalizer, self.device, precision=self.precision)


@dataclass
class ListData:
    """A file-list benchmark: training, validation and test ``FileList``s whose images are
    decoded by DataLoader workers (``workers``) with RIDE's ImageNet transforms."""

    name: str
    class_names: list
    counts: np.ndarray  # the whole training list's counts: shot splits and train_counts
    train: Any  # bvkit.data.FileList (validation images held out where the benchmark has no val list)
    val: Any
    test: Any
    device: torch.device
    image_size: int
    resize: int
    workers: int
    in_channels: int = 3
    precision: str = "fp32"  # the run's (``bvkit.train.devices``): what its predictions compute in

    @property
    def train_counts(self) -> np.ndarray:
        return self.train.class_counts()

    def part(self, name: str):
        return {"train": self.train, "val": self.val, "test": self.test, "check": None}[name]

    def size(self, name: str) -> int:
        part = self.part(name)
        return 0 if part is None else len(part)

    def labels(self, name: str) -> np.ndarray:
        return np.asarray(self.part(name).labels)

    def transform(self, train: bool):
        return imagenet_transform(train, size=self.image_size, resize=self.resize)

    def train_loader(self, batch_size: int, balanced: bool, seed: int, shard: bool = True):
        """Batches drawn from ``(seed, epoch)``, every image's augmentation from ``(seed, epoch,
        index)``; under DDP with ``shard`` each rank loads its slice of every global batch."""
        world = ddp.world_size() if shard else 1
        # a last slice of one image breaks train-mode BatchNorm: drop the last batch only then
        drop_last = 0 < len(self.train) % batch_size < 2 * world
        return file_list_loader(self.train, batch_size, train=True, workers=self.workers, balanced=balanced,
                                seed=seed, transform=self.transform(True), drop_last=drop_last,
                                rank=ddp.rank() if shard else 0, world_size=world)

    def predict(self, forward, name: str) -> dict[str, torch.Tensor]:
        """Outputs over a part in list order; under DDP each rank predicts a contiguous share
        (with rank 0's BatchNorm statistics) and the shares are gathered on every rank."""
        from bvkit.data.loaders import worker_message

        files = self.part(name)
        index = np.arange(len(files))
        if ddp.active():
            module = module_of(forward)
            if module is not None:
                ddp.broadcast_buffers(module)
            index = np.array_split(index, ddp.world_size())[ddp.rank()]
        loader = file_list_loader(files.subset(index), EVAL_BATCH, train=False, workers=self.workers,
                                  transform=self.transform(False))
        try:
            outputs = predict_batches(forward, loader, self.device, self.precision)
        except BvkitError as err:  # re-raised from a worker with its traceback: keep one line
            raise BvkitError(worker_message(err)) from None
        return ddp.gather(outputs)


def load_data(dataset, imbalance, data_root, n_max):
    """A ``LongTailed`` (given, or made by name) or a file-list benchmark by name."""
    if not isinstance(dataset, str):
        return dataset
    if dataset in FILE_LIST_DATASETS:
        return load_benchmark(dataset, data_root)
    if dataset not in DATASETS:
        raise BvkitError(f"unknown dataset {dataset!r}; choose one of {', '.join(list_datasets() + list_benchmarks())}")
    kwargs = {"imbalance": imbalance, "root": data_root}
    if n_max is not None:
        kwargs["n_max"] = n_max
    return make_long_tailed(dataset, **kwargs)


def prepare_data(long_tailed, recipe: Recipe, seed: int, device: torch.device, workers: int | None = None,
                 check_per_class: int = CHECK_PER_CLASS, test: bool = True):
    """The run's data: :class:`DeviceData` for a ``LongTailed``, :class:`ListData` for a
    file-list benchmark, with the validation split of ``recipe.val_per_class`` (never the test
    set) and, on a ``LongTailed``, the check images that follow it in the same draw; its
    predictions in the recipe's precision on ``device`` (``resolve_precision``). ``test=False``:
    a ``LongTailed``'s test set stays off the device (a pack shares one copy)."""
    precision = resolve_precision(recipe.precision, device)
    if isinstance(long_tailed, FileListBenchmark):
        return replace(_list_data(long_tailed, recipe, seed, device, workers), precision=precision)
    train_idx, val_idx = validation_split(long_tailed, recipe.val_per_class, seed)
    check_idx = holdout_indices(long_tailed, check_per_class, seed, skip=recipe.val_per_class)
    return device_data(long_tailed, train_idx, val_idx, make_augment(recipe, long_tailed), device, check_idx=check_idx,
                       precision=precision, test=test)


def device_data(long_tailed, train_idx, val_idx, augment, device: torch.device, test: bool = True,
                check_idx=None, precision: str = "fp32") -> DeviceData:
    """:class:`DeviceData` of a ``LongTailed`` trained on ``train_idx`` and validated on
    ``val_idx`` (into ``long_tailed.pool``), checked on ``check_idx`` when given; its test set on
    the device too unless ``test=False``; predicting in ``precision``."""
    pool = long_tailed.pool
    check_idx = None if check_idx is None else np.asarray(check_idx, dtype=np.int64)
    return DeviceData(
        name=long_tailed.name, class_names=long_tailed.class_names, counts=np.asarray(long_tailed.counts),
        train_counts=np.bincount(pool.labels[train_idx], minlength=len(long_tailed.class_names)),
        train_set=device_tensors(pool.subset(train_idx), device),
        val_set=device_tensors(pool.subset(val_idx), device),
        test_set=device_tensors(long_tailed.test, device) if test else None,
        augment=augment, normalizer=make_normalizer(augment), device=device,
        long_tailed=long_tailed, train_idx=train_idx, val_idx=val_idx,
        check_set=None if check_idx is None else device_tensors(pool.subset(check_idx), device), check_idx=check_idx,
        precision=precision,
    )


def _list_data(bench, recipe: Recipe, seed: int, device: torch.device, workers: int | None) -> ListData:
    if recipe.procedure is not None:
        raise BvkitError(f"method {recipe.name} trains by its own procedure ({recipe.procedure}), which needs data "
                         f"held on the device (cifar10-lt, cifar100-lt, ...); it does not run on {bench.name}")
    unknown = sorted(set(recipe.augment) - set(LIST_AUGMENT))
    if unknown:
        raise BvkitError(f"augment setting(s) {', '.join(unknown)} are for data held on the device; {bench.name} "
                         f"takes augment.size and augment.resize (a method by name gets {bench.name}'s setting)")
    size = int(recipe.augment.get("size", 224))
    resize = int(recipe.augment.get("resize", round(size * 256 / 224)))
    if bench.val is not None:
        train, val = bench.train, bench.val
    else:  # no validation list (iNat 2018): hold a few images of each class out of the training list
        train_idx, val_idx = carve_per_class(bench.train.labels, np.arange(len(bench.train)),
                                             range(len(bench.class_names)), recipe.val_per_class, seed)
        train, val = bench.train.subset(train_idx), bench.train.subset(val_idx)
    if workers is None:
        workers = min(8, max(1, (os.cpu_count() or 1) // ddp.local_world_size()))
    elif workers < 0:
        raise BvkitError(f"workers must be >= 0, got {workers}")
    return ListData(bench.name, bench.class_names, np.asarray(bench.counts), train, val, bench.test, device,
                    size, resize, int(workers))


def validation_split(data, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) into ``data.pool``; never the test set.

    Validation images come from pool images outside the long-tailed subset
    (``holdout_indices``). When the pool has no spare image for some class, that class gives
    up to ``per_class`` images, but at most a fifth of its LT images, from the training subset.
    """
    train_idx = np.asarray(data.train_indices, dtype=np.int64)
    val_idx = np.asarray(holdout_indices(data, per_class, seed), dtype=np.int64)
    labels = np.asarray(data.pool.labels)
    n_classes = len(data.class_names)
    covered = np.bincount(labels[val_idx], minlength=n_classes) > 0
    if covered.all():
        return train_idx, val_idx
    train_idx, carved = carve_per_class(labels, train_idx, np.flatnonzero(~covered), per_class, seed)
    return train_idx, np.concatenate([val_idx, carved])


def carve_per_class(labels, train_idx, classes, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices left, validation indices): each of ``classes`` gives up to ``per_class``
    of its images in ``train_idx``, but at most a fifth of them (a class of fewer than 5 gives
    none), drawn with a generator seeded from ``seed``."""
    labels = np.asarray(labels)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    rng = np.random.default_rng([seed, 1])
    ordered = np.argsort(labels[train_idx], kind="stable")  # each class's members in train_idx order
    sorted_labels = labels[train_idx][ordered]
    carved = []
    for c in classes:
        lo, hi = np.searchsorted(sorted_labels, [c, c + 1])
        members = train_idx[ordered[lo:hi]]
        take = min(per_class, len(members) // 5)
        if take:
            carved.append(rng.choice(members, size=take, replace=False))
    if not carved:
        return train_idx, np.zeros(0, dtype=np.int64)
    carved = np.concatenate(carved)
    return train_idx[~np.isin(train_idx, carved)], carved


def make_augment(recipe: Recipe, data) -> Augment:
    """The recipe's on-device augmentation, normalised by the dataset's published (CIFAR) or
    measured mean and std unless the recipe sets them."""
    kwargs = dict(recipe.augment)
    if "mean" not in kwargs:
        kwargs["mean"], kwargs["std"] = tuple(data.mean), tuple(data.std)
    return Augment(**kwargs)


def make_normalizer(augment: Augment) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 images -> normalised floats, without augmentation (evaluation)."""
    return lambda x: normalize(x, augment.mean, augment.std)


def device_tensors(images, device: torch.device) -> Tensors:
    """An ``ImageSet`` as uint8 ``(N, C, H, W)`` images and int64 labels on ``device``."""
    return Tensors(*to_device(images, device))


def make_loader(tensors: Tensors, batch_size: int, balanced: bool, augment, seed: int) -> DeviceLoader:
    # a last batch of one image breaks train-mode BatchNorm; drop it only then
    drop_last = len(tensors.y) % batch_size == 1
    return DeviceLoader(tensors.x, tensors.y, batch_size, shuffle=True, drop_last=drop_last,
                        balanced=balanced, augment=augment, seed=seed)


def imbalance_of(data, imbalance: float) -> float:
    """The run's imbalance factor, max / min of its training counts (``imbalance`` when a
    class has none); a file list's over the classes it has."""
    counts = np.asarray(data.counts)
    if isinstance(data, ListData):
        counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if counts.min() > 0 else float(imbalance)
