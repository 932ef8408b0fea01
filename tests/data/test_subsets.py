import numpy as np
import pytest

from bvkit.data import (
    holdout_indices,
    list_schemes,
    load_subsets,
    sample_subsets,
    save_subsets,
)
from bvkit.errors import BvkitError


def per_class(data, indices):
    return np.bincount(data.pool.labels[indices], minlength=data.n_classes)


def test_schemes():
    assert list_schemes() == ["bootstrap", "redraw", "split", "subsample"]


@pytest.mark.parametrize("scheme", ["redraw", "bootstrap", "split", "subsample"])
def test_deterministic_and_seed_dependent(synthetic_lt, scheme):
    a = sample_subsets(scheme, synthetic_lt, 3, seed=7)
    b = sample_subsets(scheme, synthetic_lt, 3, seed=7)
    c = sample_subsets(scheme, synthetic_lt, 3, seed=8)
    assert len(a) == 3 and all(s.dtype == np.int64 for s in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], a[1])


def test_redraw_keeps_counts_and_draws_from_the_pool(synthetic_lt):
    data = synthetic_lt
    subsets = sample_subsets("redraw", data, 4, seed=0)
    lt = set(data.train_indices.tolist())
    for subset in subsets:
        assert np.array_equal(per_class(data, subset), data.counts)
        assert len(np.unique(subset)) == len(subset)
        assert not set(subset.tolist()) <= lt  # fresh draws, not the LT set itself
    # the head class (count == pool size) is the same in every draw
    heads = [set(s[data.pool.labels[s] == 0].tolist()) for s in subsets]
    assert all(h == heads[0] for h in heads)
    # subset d does not depend on how many were asked for
    assert np.array_equal(sample_subsets("redraw", data, 2, seed=0)[1], subsets[1])


def test_bootstrap_resamples_the_lt_set(synthetic_lt):
    data = synthetic_lt
    for subset in sample_subsets("bootstrap", data, 3, seed=0):
        assert np.array_equal(per_class(data, subset), data.counts)
        assert set(subset.tolist()) <= set(data.train_indices.tolist())
        assert len(np.unique(subset)) < len(subset)  # with replacement


def test_split_is_disjoint_stratified_and_covers_the_lt_set(synthetic_lt):
    data = synthetic_lt
    parts = sample_subsets("split", data, 4, seed=0)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    assert np.array_equal(np.sort(joined), np.sort(data.train_indices))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    counts = np.stack([per_class(data, p) for p in parts])  # (D, C)
    assert np.all(counts.max(0) - counts.min(0) <= 1)
    assert np.all(counts[:, data.counts >= 4] >= 1)
    # a class with fewer images than parts (count 8 < D = 10) is in only 8 parts
    parts10 = sample_subsets("split", data, 10, seed=0)
    assert sum(per_class(data, p)[8] > 0 for p in parts10) == data.counts[8] == 8


def test_subsample(synthetic_lt):
    data = synthetic_lt
    for subset in sample_subsets("subsample", data, 2, seed=0, fraction=0.3):
        expected = [max(1, round(0.3 * n)) for n in data.counts]
        assert list(per_class(data, subset)) == expected
        assert len(np.unique(subset)) == len(subset)
        assert set(subset.tolist()) <= set(data.train_indices.tolist())
    assert min(per_class(data, sample_subsets("subsample", data, 1, fraction=0.01)[0])) == 1


def test_bad_scheme_arguments(synthetic_lt):
    with pytest.raises(BvkitError, match="unknown subset scheme 'jackknife'"):
        sample_subsets("jackknife", synthetic_lt, 2)
    with pytest.raises(BvkitError, match="fraction"):
        sample_subsets("subsample", synthetic_lt, 2, fraction=1.5)
    with pytest.raises(BvkitError, match="takes no option 'fraction'"):
        sample_subsets("redraw", synthetic_lt, 2, fraction=0.5)
    with pytest.raises(BvkitError, match="number of subsets"):
        sample_subsets("split", synthetic_lt, 0)


def test_save_and_load_round_trip(tmp_path, synthetic_lt):
    subsets = sample_subsets("split", synthetic_lt, 12, seed=3)  # unequal lengths, > 10 keys
    path = tmp_path / "subsets.npz"
    save_subsets(path, subsets)
    loaded = load_subsets(path)
    assert len(loaded) == 12
    assert all(np.array_equal(a, b) and b.dtype == np.int64 for a, b in zip(subsets, loaded))
    with pytest.raises(BvkitError, match="missing subsets file"):
        load_subsets(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BvkitError, match="cannot read subsets file"):
        load_subsets(tmp_path / "junk.npz")


def test_holdout_comes_from_outside_the_lt_set(synthetic_lt):
    data = synthetic_lt
    held = holdout_indices(data, per_class=20, seed=0)
    assert not set(held.tolist()) & set(data.train_indices.tolist())
    counts = per_class(data, held)
    assert counts[0] == 0  # the head class uses its whole pool
    assert list(counts[1:]) == [20] * 9
    assert np.array_equal(held, holdout_indices(data, per_class=20, seed=0))
    assert not np.array_equal(held, holdout_indices(data, per_class=20, seed=1))


def test_holdout_ranges_of_one_seed_are_disjoint_draws_of_the_unused_pool(synthetic_lt):
    """skip=50 continues the validation draw's random order: a second, disjoint sample (the
    check set), and the two together are the larger draw's images."""
    data = synthetic_lt
    val = holdout_indices(data, per_class=20, seed=0)
    check = holdout_indices(data, per_class=30, seed=0, skip=20)
    assert not set(check.tolist()) & set(val.tolist())
    assert not set(check.tolist()) & set(data.train_indices.tolist())
    assert np.array_equal(np.sort(np.concatenate([val, check])), np.sort(holdout_indices(data, per_class=50, seed=0)))
    assert list(per_class(data, check)[1:]) == [30] * 9
    with pytest.raises(BvkitError, match="skip"):
        holdout_indices(data, per_class=5, skip=-1)
