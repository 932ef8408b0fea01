"""Bootstrap intervals and paired comparisons."""

import numpy as np
import pandas as pd
import pytest
from decompose_helpers import random_set

import bvkit.decomposition as bd
from bvkit.decomposition import bootstrap as bs
from bvkit.decomposition.grouping import Groups
from bvkit.errors import BvkitError

VALUES = ["accuracy", "error", "bias", "variance"]


def test_sample_counts_are_stratified_and_seeded():
    labels = np.array([0, 0, 0, 1, 2, 2, 2, 2, 2])
    counts = bs.Resamples.draw(labels, 200, seed=3).by_sample()
    assert counts.shape == (200, 9)
    for k in range(3):
        np.testing.assert_array_equal(counts[:, labels == k].sum(1), (labels == k).sum())
    np.testing.assert_array_equal(counts[:, 3], 1)  # a class of one sample is always itself
    np.testing.assert_array_equal(counts, bs.Resamples.draw(labels, 200, seed=3).by_sample())
    assert not np.array_equal(counts, bs.Resamples.draw(labels, 200, seed=4).by_sample())
    assert counts[:, :3].std() > 0


def test_class_replicates_match_explicit_resampling():
    labels = np.array([1, 0, 1, 1, 0, 2])
    values = np.array([0.5, 2.0, 1.0, 3.0, 4.0, 7.0])
    groups = Groups.build(labels, 4)
    resamples = bs.Resamples.draw(labels, 50, seed=0)
    counts = resamples.by_sample()
    reps = bs.class_replicates(values, groups, resamples)
    for b in range(50):
        for k in range(3):
            mask = labels == k
            assert reps[b, k] == pytest.approx(np.sum(counts[b, mask] * values[mask]) / mask.sum())
    assert np.isnan(reps[:, 3]).all()  # class 3 has no test samples


def test_class_replicates_resample_within_classes():
    # moved from the report's own bootstrap (deleted): the same checks on the one engine
    classes = np.array([0, 0, 0, 1, 1, 2])
    values = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 7.0])
    groups = Groups.build(classes, 4)
    replicates = bs.class_replicates(values, groups, bs.Resamples.draw(classes, 500, seed=0))
    assert replicates.shape == (500, 4)
    np.testing.assert_array_equal(replicates[:, 2], 7.0)  # one sample: no spread
    assert set(np.round(replicates[:, 1], 6)) <= {10.0, 15.0, 20.0}
    assert replicates[:, 0].min() >= 1 and replicates[:, 0].max() <= 3
    assert np.isnan(replicates[:, 3]).all()  # class without test samples
    assert abs(replicates[:, 0].mean() - 2.0) < 0.1
    again = bs.class_replicates(values, groups, bs.Resamples.draw(classes, 500, seed=0))
    np.testing.assert_array_equal(replicates, again)
    lo, hi = bs.intervals(replicates, 0.95)
    assert np.all(lo[:3] <= hi[:3]) and lo[2] == hi[2] == 7.0
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def test_intervals_contain_point_estimate_and_are_deterministic():
    labels, logits, counts = random_set(n_samples=400, n_classes=6)
    kw = dict(train_counts=counts, loss="all", bootstrap=300, seed=7)
    first = bd.decompose(labels, logits=logits, **kw)
    again = bd.decompose(labels, logits=logits, chunk_size=17, n_jobs=2, **kw)
    pd.testing.assert_frame_equal(first.per_class, again.per_class)
    pd.testing.assert_frame_equal(first.per_split, again.per_split)
    other = bd.decompose(labels, logits=logits, **{**kw, "seed": 8})
    assert not np.allclose(first.per_class["bias_lo"], other.per_class["bias_lo"])
    for frame in (first.per_class, first.per_split.dropna(subset=["error"])):
        cols = VALUES + ["variance_unbiased", "net_variance"]
        for col in cols:
            rows = frame.dropna(subset=[col])
            assert (rows[f"{col}_lo"] <= rows[col] + 1e-12).all(), col
            assert (rows[col] <= rows[f"{col}_hi"] + 1e-12).all(), col
            assert (rows[f"{col}_lo"] < rows[f"{col}_hi"]).any(), col


def test_wider_level_gives_wider_intervals():
    labels, logits, _ = random_set(n_samples=300, n_classes=4)
    narrow = bd.decompose(labels, logits=logits, bootstrap=200, level=0.5).per_split
    wide = bd.decompose(labels, logits=logits, bootstrap=200, level=0.99).per_split
    assert (wide["bias_hi"] - wide["bias_lo"] > narrow["bias_hi"] - narrow["bias_lo"]).all()


def test_model_bootstrap_recomputes_terms():
    labels, logits, counts = random_set(n_samples=200, n_models=6, n_classes=5)
    kw = dict(train_counts=counts, loss="all", bootstrap=100, seed=1)
    samples_only = bd.decompose(labels, logits=logits, estimator="plugin", **kw)
    with_models = bd.decompose(labels, logits=logits, bootstrap_models=True, **kw)
    again = bd.decompose(labels, logits=logits, bootstrap_models=True, chunk_size=9, n_jobs=2,
                         **kw)
    pd.testing.assert_frame_equal(with_models.per_split, again.per_split)
    for col in VALUES:  # point estimates do not depend on the bootstrap
        np.testing.assert_allclose(with_models.per_split[col], samples_only.per_split[col])
    def width(frame):
        return (frame["variance_hi"] - frame["variance_lo"]).to_numpy()

    assert (width(with_models.per_split) != width(samples_only.per_split)).any()


def test_model_bootstrap_with_identical_models_changes_nothing():
    labels, logits, _ = random_set(n_samples=100, n_models=1, n_classes=5)
    same = np.repeat(logits, 4, axis=0)
    result = bd.decompose(labels, logits=same, loss="all", bootstrap=50, bootstrap_models=True)
    plain = bd.decompose(labels, logits=same, loss="all", bootstrap=50, estimator="plugin")
    cols = [f"{c}_{e}" for c in VALUES for e in ("lo", "hi")]
    np.testing.assert_allclose(result.per_split[cols], plain.per_split[cols], atol=1e-6)


def test_comparison_equals_difference_of_frames_with_paired_intervals():
    labels, logits, counts = random_set(seed=1, n_samples=300, n_classes=6)
    _, other, _ = random_set(seed=2, n_samples=300, n_classes=6)
    kw = dict(train_counts=counts, loss="all", bootstrap=200, seed=5)
    ce = bd.decompose(labels, logits=logits, method="ce", **kw)
    ride = bd.decompose(labels, logits=other, method="ride", **kw)
    comparison = bd.compare([ce, ride], reference="ce", bootstrap=200, seed=5)
    assert set(comparison.per_class["method"]) == {"ride"}
    assert (comparison.per_class["reference"] == "ce").all()
    for attr, key in (("per_class", ["loss", "class"]), ("per_split", ["loss", "split"])):
        diff = getattr(comparison, attr).set_index(key)
        a = getattr(ride, attr).set_index(key)
        b = getattr(ce, attr).set_index(key)
        for col in VALUES + ["net_variance"]:
            np.testing.assert_allclose(diff[col], (a[col] - b[col]).loc[diff.index], atol=1e-12,
                                       err_msg=f"{attr} {col}")
        rows = diff.dropna(subset=["error"])
        assert (rows["error_lo"] <= rows["error"] + 1e-12).all()
        assert (rows["error"] <= rows["error_hi"] + 1e-12).all()
    # paired: a method compared with itself has a zero-width interval at 0
    twin = bd.decompose(labels, logits=logits, method="twin", **kw)
    self_diff = bd.compare([ce, twin], reference="ce", bootstrap=50).per_split
    assert np.allclose(self_diff[["bias", "bias_lo", "bias_hi"]].dropna(), 0)


def test_comparison_refuses_mismatched_test_sets_and_unknown_reference():
    labels, logits, _ = random_set(seed=1, n_samples=50)
    ce = bd.decompose(labels, logits=logits, method="ce")
    shuffled = bd.decompose(np.roll(labels, 1), logits=logits, method="ride")
    with pytest.raises(BvkitError, match="same test set"):
        bd.compare([ce, shuffled], reference="ce")
    with pytest.raises(BvkitError, match="reference method 'ldam'"):
        bd.compare([ce, shuffled], reference="ldam")
    with pytest.raises(BvkitError, match="twice"):
        bd.compare([ce, ce], reference="ce")
