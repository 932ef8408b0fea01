import numpy as np
import pytest

from bvkit.data import SPLITS, empty_splits, long_tail_counts, shot_splits, split_sizes
from bvkit.errors import BvkitError


def test_cifar100_lt_counts_and_splits():
    counts = long_tail_counts(500, 100, 100)
    assert counts.dtype == np.int64
    assert counts.sum() == 10847
    assert list(counts[:3]) == [500, 477, 455]
    assert counts[-1] == 5
    assert np.all(np.diff(counts) <= 0)
    assert split_sizes(shot_splits(counts)) == {"many": 35, "medium": 35, "few": 30}
    assert empty_splits(shot_splits(counts)) == []


def test_cifar10_lt_counts_and_empty_split():
    counts = long_tail_counts(5000, 10, 100)
    assert counts.sum() == 12406
    assert list(counts) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    splits = shot_splits(counts)
    assert split_sizes(splits) == {"many": 8, "medium": 2, "few": 0}
    assert empty_splits(splits) == ["few"]


@pytest.mark.parametrize("imbalance", [10, 50, 100, 200])
def test_exp_profile_matches_formula(imbalance):
    counts = long_tail_counts(500, 100, imbalance)
    expected = [int(500 * (1 / imbalance) ** (c / 99)) for c in range(100)]
    assert list(counts) == expected
    assert counts[0] == 500 and counts[-1] == int(500 / imbalance)


def test_step_profile():
    assert list(long_tail_counts(5000, 10, 10, "step")) == [5000] * 5 + [500] * 5
    odd = long_tail_counts(100, 5, 4, "step")
    assert list(odd) == [100, 100, 25, 25, 25]


def test_imbalance_one_is_balanced():
    assert list(long_tail_counts(50, 4, 1)) == [50] * 4


@pytest.mark.parametrize("bad", [0.5, 0, -3, float("nan")])
def test_imbalance_below_one_is_bad_input(bad):
    with pytest.raises(BvkitError, match="imbalance"):
        long_tail_counts(500, 100, bad)


def test_unknown_profile_and_empty_class_are_bad_input():
    with pytest.raises(BvkitError, match="profile"):
        long_tail_counts(500, 10, 10, "linear")
    with pytest.raises(BvkitError, match="no training image"):
        long_tail_counts(500, 100, 1000)


def test_shot_split_thresholds_are_strict_at_the_edges():
    splits = shot_splits([101, 100, 20, 19])
    assert list(splits) == ["many", "medium", "medium", "few"]
    assert list(shot_splits([101, 100, 20, 19], many=19, few=20)) == ["many", "many", "many", "few"]
    with pytest.raises(BvkitError, match="thresholds"):
        shot_splits([5], many=20, few=100)


def test_custom_thresholds_and_split_sizes_cover_every_split():
    counts = long_tail_counts(5000, 10, 100)
    splits = shot_splits(counts, many=1000, few=100)
    sizes = split_sizes(splits)
    assert tuple(sizes) == SPLITS
    assert sizes == {"many": 4, "medium": 4, "few": 2}
    assert sum(sizes.values()) == len(counts)


def test_profiles_and_sources_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, bvkit.data as d; d.long_tail_counts(500, 100, 100); "
            "d.make_long_tailed('synthetic-lt', n_max=20, imbalance=4); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
