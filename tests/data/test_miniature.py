"""mini-lt, the built-in miniature of CIFAR-100-LT that `bvkit demo` trains on."""

import numpy as np
import pytest

from bvkit.data import make_long_tailed
from bvkit.data.profiles import shot_splits
from bvkit.data.sources import load_source
from bvkit.errors import BvkitError


def test_split_counts_at_imbalance_100_give_every_split_three_classes_or_more():
    data = make_long_tailed("mini-lt", imbalance=100, profile="exp")
    counts = np.asarray(data.counts)
    assert len(counts) == 20 and counts.max() == 500 and counts.min() == 5
    splits = shot_splits(counts)  # default thresholds: > 100 many, < 20 few
    sizes = {s: int(np.sum(splits == s)) for s in ("many", "medium", "few")}
    assert sizes == {"many": 7, "medium": 7, "few": 6}
    assert len(data.train.labels) == counts.sum() == 2295


def test_the_test_set_is_balanced_and_the_images_are_16_pixels():
    data = make_long_tailed("mini-lt", imbalance=100)
    assert np.array_equal(np.bincount(data.test.labels), np.full(20, 100))
    assert data.test.images.shape[1:] == (16, 16, 3) and data.test.images.dtype == np.uint8


def test_the_generator_is_seeded_and_deterministic():
    first = load_source("synthetic", train=True, n_per_class=20, n_classes=20, size=16, modes=2)
    again = load_source("synthetic", train=True, n_per_class=20, n_classes=20, size=16, modes=2)
    other_world = load_source("synthetic", train=True, n_per_class=20, n_classes=20, size=16,
                              modes=2, world_seed=1)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.images, other_world.images)
    a, b = make_long_tailed("mini-lt", seed=3), make_long_tailed("mini-lt", seed=3)
    assert np.array_equal(a.train.images, b.train.images)
    test = load_source("synthetic", train=False, n_per_class=20, n_classes=20, size=16, modes=2)
    assert not np.array_equal(first.images[:100], test.images[:100])  # independent draws


@pytest.mark.parametrize("look, word", [({"blur": 1}, "blur"), ({"size": 4}, "size"),
                                         ({"modes": 1.5}, "modes")])
def test_a_bad_look_gets_one_line_naming_it(look, word):
    with pytest.raises(BvkitError, match=word):
        load_source("synthetic", n_per_class=2, **look)
