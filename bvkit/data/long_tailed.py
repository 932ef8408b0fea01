"""Long-tailed training sets cut from balanced pools (CIFAR-LT style), with their test sets."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bvkit.data.imageset import ImageSet
from bvkit.data.profiles import long_tail_counts, shot_splits
from bvkit.data.sources import load_source
from bvkit.data.synthetic import MINI_LT
from bvkit.errors import BvkitError
from bvkit.registry import Registry

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclass(frozen=True)
class LongTailedSpec:
    """What a long-tailed dataset name means: its source, head count and class count."""

    source: str
    n_max: int
    n_classes: int
    mean: tuple[float, ...] | None  # None: computed from the pool
    std: tuple[float, ...] | None
    options: dict = field(default_factory=dict)  # the source's own settings (a generator's look)


DATASETS: Registry[LongTailedSpec] = Registry("dataset")
DATASETS.register("cifar10-lt", LongTailedSpec("cifar10", 5000, 10, CIFAR_MEAN, CIFAR_STD))
DATASETS.register("cifar100-lt", LongTailedSpec("cifar100", 500, 100, CIFAR_MEAN, CIFAR_STD))
DATASETS.register("fashion-mnist-lt", LongTailedSpec("fashion-mnist", 6000, 10, FASHION_MNIST_MEAN,
                                                     FASHION_MNIST_STD))
DATASETS.register("synthetic-lt", LongTailedSpec("synthetic", 500, 10, None, None))
# the miniature of CIFAR-100-LT that `bvkit demo` trains on (docs/subsets.md, "Built-in datasets")
DATASETS.register("mini-lt", LongTailedSpec("synthetic", 500, 20, None, None, MINI_LT))


def list_datasets(pattern: str = "*") -> list[str]:
    """Names ``make_long_tailed`` accepts, filtered by a case-sensitive fnmatch pattern."""
    return DATASETS.names(pattern)


def dataset_spec(name: str) -> LongTailedSpec:
    return DATASETS.get(name)


@dataclass(frozen=True)
class LongTailed:
    """A long-tailed training set as indices into a balanced ``pool``, plus the balanced test set.

    ``counts[c]`` images of class ``c`` are in ``train_indices``; pool images outside it are
    free for validation (``holdout_indices``) and for redrawn subsets.
    """

    name: str
    pool: ImageSet
    test: ImageSet
    train_indices: np.ndarray
    counts: np.ndarray
    imbalance: float
    profile: str
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def class_names(self) -> list[str]:
        return self.pool.class_names

    @property
    def train(self) -> ImageSet:
        """The long-tailed training images themselves."""
        return self.pool.subset(self.train_indices)

    @property
    def n_classes(self) -> int:
        return len(self.counts)

    @property
    def splits(self) -> np.ndarray:
        """Shot split of each class with the default thresholds (``shot_splits`` for others)."""
        return shot_splits(self.counts)


def long_tailed_indices(labels, counts, seed: int = 0) -> np.ndarray:
    """Per class (in label order), shuffle that class's indices and keep the first ``counts[c]``.

    Uses the legacy ``RandomState(seed).shuffle`` sequence so that, on the same pool order,
    the subset is the one the LDAM/RIDE reference code builds.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n_c in enumerate(np.asarray(counts)):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n_c:
            raise BvkitError(f"class {c} has {len(idx)} images in the pool, the profile asks for {n_c}")
        rng.shuffle(idx)
        chosen.append(idx[:n_c])
    return np.concatenate(chosen).astype(np.int64)


def make_long_tailed(dataset: str, imbalance: float = 100.0, profile: str = "exp",
                     seed: int = 0, root=None, n_max: int | None = None,
                     download: bool = False, check_md5: bool = False,
                     **source_options) -> LongTailed:
    """Load a dataset's balanced training pool and test set and cut the long-tailed training set.

    ``n_max`` defaults to the benchmark's head count (CIFAR-10 5000, CIFAR-100 500,
    Fashion-MNIST 6000, synthetic-lt and mini-lt 500; a larger ``n_max`` for a generated set
    generates a larger pool). ``source_options`` go to the source (a generated set's look).
    """
    spec = dataset_spec(dataset)
    n_max = spec.n_max if n_max is None else int(n_max)
    if spec.source == "synthetic":
        source_options = {"n_classes": spec.n_classes, **spec.options, **source_options}
        counts = long_tail_counts(n_max, source_options["n_classes"], imbalance, profile)
        pool = load_source("synthetic", train=True, n_per_class=max(n_max, spec.n_max),
                           **source_options)
        test = load_source("synthetic", train=False, **source_options)
    else:
        counts = long_tail_counts(n_max, spec.n_classes, imbalance, profile)
        kw = dict(root=root, download=download, check_md5=check_md5, **source_options)
        pool = load_source(spec.source, train=True, **kw)
        test = load_source(spec.source, train=False, **kw)
    mean, std = spec.mean, spec.std
    if mean is None:
        mean, std = channel_stats(pool.images)
    return LongTailed(
        name=dataset, pool=pool, test=test,
        train_indices=long_tailed_indices(pool.labels, counts, seed),
        counts=counts, imbalance=float(imbalance), profile=profile, seed=int(seed),
        mean=tuple(mean), std=tuple(std),
    )


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 ``(N, H, W, C)`` images, in [0, 1] units."""
    levels = np.arange(256) / 255.0
    mean, std = [], []
    for channel in range(images.shape[-1]):
        # a 256-bin histogram: exact, and no float copy of the whole pool
        hist = np.bincount(images[..., channel].ravel(), minlength=256) / images[..., 0].size
        mu = float(hist @ levels)
        mean.append(round(mu, 4))
        std.append(round(float(np.sqrt(hist @ (levels - mu) ** 2)), 4))
    return tuple(mean), tuple(std)
