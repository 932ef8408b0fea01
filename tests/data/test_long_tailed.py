from pathlib import Path

import numpy as np
import pytest

from bvkit.data import (
    LongTailed,
    data_root,
    list_datasets,
    long_tail_counts,
    long_tailed_indices,
    make_long_tailed,
    split_sizes,
)
from bvkit.errors import BvkitError

REAL_CIFAR10 = data_root() / "cifar-10-batches-py"


def test_list_datasets():
    assert list_datasets() == ["cifar10-lt", "cifar100-lt", "fashion-mnist-lt", "mini-lt", "synthetic-lt"]
    assert list_datasets("cifar*") == ["cifar10-lt", "cifar100-lt"]


def test_synthetic_lt(synthetic_lt):
    data = synthetic_lt
    assert isinstance(data, LongTailed)
    assert list(data.counts) == list(long_tail_counts(500, 10, 100))
    assert len(data.train) == data.counts.sum() == 1236
    assert np.array_equal(data.train.class_counts(), data.counts)
    assert len(np.unique(data.train_indices)) == len(data.train_indices)
    assert np.array_equal(data.test.class_counts(), [100] * 10)
    assert data.class_names == data.pool.class_names and data.n_classes == 10
    assert split_sizes(data.splits) == {"many": 4, "medium": 3, "few": 3}
    assert len(data.mean) == len(data.std) == 3 and all(0 < s < 1 for s in data.std)


def test_selection_is_seeded_per_class_shuffle(synthetic_lt):
    data = synthetic_lt
    # the reference procedure (LDAM / RIDE code): one RandomState, shuffle each class in turn
    rng = np.random.RandomState(0)
    expected = []
    for c, n_c in enumerate(data.counts):
        idx = np.where(data.pool.labels == c)[0]
        rng.shuffle(idx)
        expected.extend(idx[:n_c])
    assert np.array_equal(data.train_indices, expected)
    again = make_long_tailed("synthetic-lt", seed=0)
    assert np.array_equal(again.train_indices, data.train_indices)
    assert np.array_equal(again.pool.images, data.pool.images)
    other = make_long_tailed("synthetic-lt", seed=1)
    assert not np.array_equal(other.train_indices, data.train_indices)
    assert np.array_equal(other.counts, data.counts)


def test_step_profile_and_larger_pool():
    data = make_long_tailed("synthetic-lt", imbalance=10, profile="step", n_max=600)
    assert list(data.counts) == [600] * 5 + [60] * 5
    assert np.array_equal(data.pool.class_counts(), [600] * 10)


def test_cifar10_lt_from_official_layout(cifar10_root):
    root, _, names = cifar10_root
    data = make_long_tailed("cifar10-lt", imbalance=10, root=root, n_max=30)
    assert list(data.counts) == [int(30 * 0.1 ** (c / 9)) for c in range(10)]
    assert np.array_equal(data.train.class_counts(), data.counts)
    assert data.class_names == names and len(data.test) == 30
    assert data.mean == (0.4914, 0.4822, 0.4465)
    with pytest.raises(BvkitError, match="class 0 has 30 images in the pool, the profile asks for 31"):
        make_long_tailed("cifar10-lt", imbalance=10, root=root, n_max=31)


def test_bad_input():
    with pytest.raises(BvkitError, match="unknown dataset 'cifar1000-lt'"):
        make_long_tailed("cifar1000-lt")
    with pytest.raises(BvkitError, match="imbalance"):
        make_long_tailed("cifar100-lt", imbalance=0.5)  # fails before looking for files


def test_long_tailed_indices_rejects_short_pools():
    with pytest.raises(BvkitError, match="class 1 has 1 images"):
        long_tailed_indices([0, 0, 1], [2, 2])


@pytest.mark.skipif(not REAL_CIFAR10.is_dir(), reason="no CIFAR-10 copy in $BVKIT_DATA")
def test_real_cifar10_lt():
    data = make_long_tailed("cifar10-lt", imbalance=100)
    assert len(data.train) == 12406
    assert np.array_equal(data.train.class_counts(), long_tail_counts(5000, 10, 100))
    assert len(data.test) == 10000


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_lt():
    data = make_long_tailed("fashion-mnist-lt", imbalance=100)
    assert list(data.counts[:2]) == [6000, 3596] and data.counts.sum() == 14886
    assert data.train.images.shape == (14886, 28, 28, 1)
    assert data.mean == (0.2860,) and len(data.test) == 10000
