"""The population estimator as decompose reports it (docs/bias_variance.md, "Population
terms"): the default for D >= 3, the corrected terms and their identities, the combined
interval by hand, pairing by training set in compare, D = 2 and D = 1, the command line."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bvkit.decomposition as bd
from bvkit.decomposition import bootstrap as bs
from bvkit.decomposition import population as P
from bvkit.decomposition.grouping import Groups
from bvkit.errors import BvkitError
from decompose_helpers import random_set

COUNTS = [400, 250, 120, 60, 30, 15, 8, 4]


def test_default_is_the_population_estimator_from_three_models():
    labels, logits, _ = random_set(seed=11, n_models=4, n_samples=240, n_classes=8)
    result = bd.decompose(labels, logits=logits, train_counts=COUNTS, loss="all")
    plugin = bd.decompose(labels, logits=logits, train_counts=COUNTS, loss="all",
                          estimator="plugin")
    assert result.settings["model"]["estimator"] == "population"
    assert plugin.settings["model"]["estimator"] == "plugin" and not plugin.leave_one_out
    groups = Groups.build(labels, 8, COUNTS)
    for loss in bd.LOSSES:
        mine = result.per_split[result.per_split["loss"] == loss].reset_index(drop=True)
        theirs = plugin.per_split[plugin.per_split["loss"] == loss].reset_index(drop=True)
        terms = P.population_terms(labels, logits=logits, loss=loss)
        for col in ("bias", "variance"):
            expected = groups.split_means(groups.class_means(terms[col]))
            np.testing.assert_allclose(mine[col], expected, atol=1e-9, err_msg=f"{loss} {col}")
            # the plug-in twins are exactly the plug-in estimator's terms
            np.testing.assert_allclose(mine[f"{col}_plugin"], theirs[col], atol=1e-12)
        # means over models are left as they are
        for col in ("accuracy", "error"):
            np.testing.assert_allclose(mine[col], theirs[col], atol=1e-12)
        assert result.leave_one_out[("model", loss)]["variance"].shape == (4, 240)


def test_squared_corrections_are_the_closed_form_per_class():
    labels, logits, _ = random_set(seed=12, n_models=5, n_samples=160, n_classes=8)
    result = bd.decompose(labels, logits=logits, train_counts=COUNTS)
    cls = result.per_class
    # atol: the jackknife of the float32 kernel's terms against their own closed form
    np.testing.assert_allclose(cls["variance"], cls["variance_plugin"] * 5 / 4, atol=1e-6)
    np.testing.assert_allclose(cls["bias"], cls["bias_plugin"] - cls["variance_plugin"] / 4,
                               atol=1e-6)


def test_identities_hold_for_the_corrected_terms():
    labels, logits, _ = random_set(seed=13, n_models=5, n_samples=200, n_classes=8)
    result = bd.decompose(labels, logits=logits, train_counts=COUNTS, loss="all")
    for frame in (result.per_sample, result.per_class, result.per_split):
        for loss, part in frame.groupby("loss"):
            if loss == "zero-one":
                np.testing.assert_allclose(part["error"], part["bias"] + part["net_variance"],
                                           atol=1e-9)
            else:  # float32 kernel; clipping of sign noise at 0
                np.testing.assert_allclose(part["error"], part["bias"] + part["variance"],
                                           atol=2e-5)
    # the population variance is larger than these models' spread around their own mean
    split = result.per_split.set_index(["loss", "split"]).loc["squared"]
    assert (split["variance"] > split["variance_plugin"]).all()


def test_combined_interval_by_hand():
    loo = np.array([1.0, 2.0, 4.0, 5.0])  # D = 4
    reps = np.array([0.5, 1.5, 1.0, 2.0, 0.0])  # B = 5
    lo, hi = P.combined_interval(np.array(3.0), loo, reps, level=0.9)
    var_j = 3 / 4 * ((loo - loo.mean()) ** 2).sum()  # 7.5
    var_b = reps.var(ddof=1)
    dof = (var_j + var_b) ** 2 / (var_j**2 / 3)
    half = stats.t.ppf(0.95, dof) * np.sqrt(var_j + var_b)
    np.testing.assert_allclose([lo, hi], [3 - half, 3 + half])
    # without the bootstrap it is the jackknife's own t interval with D - 1 degrees of freedom
    lo, hi = P.combined_interval(np.array(3.0), loo, None, level=0.9)
    q = stats.t.ppf(0.95, 3)
    np.testing.assert_allclose([lo, hi], [3 - q * np.sqrt(var_j), 3 + q * np.sqrt(var_j)])
    # nothing varies: zero width
    assert P.combined_interval(np.array(1.0), np.ones(4), np.ones(5)) == (1.0, 1.0)


def test_decompose_intervals_combine_the_jackknife_and_the_bootstrap():
    labels, logits, _ = random_set(seed=14, n_models=5, n_samples=200, n_classes=8)
    result = bd.decompose(labels, logits=logits, train_counts=COUNTS, bootstrap=60, seed=5)
    groups = Groups.build(labels, 8, COUNTS)
    samples = result.per_sample
    loo = result.leave_one_out[("model", "squared")]["variance"]
    reps = bs.class_replicates(samples["variance"].to_numpy(), groups,
                               bs.Resamples.draw(labels, 60, 5))
    estimate = groups.class_means(samples["variance"].to_numpy())
    lo, hi = P.combined_interval(groups.split_means(estimate),
                                 groups.split_means(groups.class_means(loo)),
                                 groups.split_means(reps))
    np.testing.assert_allclose(result.per_split["variance_lo"], lo, equal_nan=True)
    np.testing.assert_allclose(result.per_split["variance_hi"], hi, equal_nan=True)
    # training-set uncertainty makes them wider than the plug-in's test-sample percentiles
    plugin = bd.decompose(labels, logits=logits, train_counts=COUNTS, bootstrap=60, seed=5,
                          estimator="plugin").per_split
    width = result.per_split["variance_hi"] - result.per_split["variance_lo"]
    assert (width > plugin["variance_hi"] - plugin["variance_lo"]).all()


def test_compare_pairs_training_sets():
    labels, logits, _ = random_set(seed=15, n_models=5, n_samples=160, n_classes=8)
    kw = dict(train_counts=COUNTS, loss="all", bootstrap=40)
    same = bd.Decomposition.concat([bd.decompose(labels, logits=logits, method="a", **kw),
                                    bd.decompose(labels, logits=logits.copy(), method="b", **kw)])
    split = bd.compare(same, "a", bootstrap=40).per_split
    for col in ("accuracy", "bias", "variance"):  # identical methods: zero-width intervals
        assert (split[f"{col}_lo"].fillna(0) == 0).all() and (split[f"{col}_hi"].fillna(0) == 0).all()
    # the same models in another order are other training sets for each k: not zero width
    shuffled = bd.Decomposition.concat([
        bd.decompose(labels, logits=logits, method="a", **kw),
        bd.decompose(labels, logits=logits[::-1].copy(), method="b", **kw)])
    jack = bd.difference_leave_one_out(shuffled, "b", "a", "variance", loss="squared")
    assert jack.shape == (5, 8) and np.abs(jack).max() > 0
    split = bd.compare(shuffled, "a", bootstrap=40).per_split.query("loss == 'squared'")
    assert (split["variance_hi"] - split["variance_lo"]).dropna().gt(0).all()
    fewer = bd.Decomposition.concat([bd.decompose(labels, logits=logits, method="a", **kw),
                                     bd.decompose(labels, logits=logits[:4], method="b", **kw)])
    with pytest.raises(BvkitError, match="same subsets"):
        bd.compare(fewer, "a", bootstrap=10)


def test_two_models_fall_back_to_plugin_with_a_warning_and_one_is_refused():
    labels, logits, _ = random_set(seed=16, n_models=3, n_samples=60, n_classes=8)
    with pytest.warns(P.FewModelsWarning, match="reporting the plug-in terms"):
        result = bd.decompose(labels, logits=logits[:2], train_counts=COUNTS)
    assert result.settings["model"]["estimator"] == "plugin"
    assert "variance_plugin" not in result.per_split
    with pytest.warns(P.FewModelsWarning, match="1 degree of freedom"):
        forced = bd.decompose(labels, logits=logits[:2], train_counts=COUNTS, bootstrap=10,
                              estimator="population")
    assert forced.per_split["variance_lo"].isna().all()  # no corrected leave-one-out value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bd.decompose(labels, logits=logits, train_counts=COUNTS)
    with pytest.raises(BvkitError, match="at least 2"):
        bd.decompose(labels, logits=logits[:1], train_counts=COUNTS)
    with pytest.raises(BvkitError, match="use one or the other"):
        bd.decompose(labels, logits=logits, bootstrap=5, bootstrap_models=True,
                     estimator="population")
    with pytest.raises(BvkitError, match="unknown estimator"):
        bd.decompose(labels, logits=logits, estimator="median")
    # bootstrap_models with the default: the plug-in terms it resamples
    with_models = bd.decompose(labels, logits=logits, bootstrap=5, bootstrap_models=True)
    assert with_models.settings["model"]["estimator"] == "plugin"


def test_hard_predictions_get_the_population_estimator_too():
    rng = np.random.default_rng(17)
    labels = rng.integers(0, 4, 90)
    preds = np.where(rng.random((5, 90)) < 0.6, labels, rng.integers(0, 4, (5, 90)))
    result = bd.decompose(labels, preds=preds, loss="all", train_counts=[300, 100, 20, 5],
                          bootstrap=20)
    for loss in ("squared", "zero-one"):
        terms = P.population_terms(labels, preds=preds, loss=loss)
        sample = result.per_sample[result.per_sample["loss"] == loss]
        np.testing.assert_allclose(sample["variance"], terms["variance"], atol=1e-12)
    assert result.per_split["bias_lo"].notna().any()


def test_cli_estimator_option(run_cli, tmp_path):
    labels, logits, _ = random_set(seed=18, n_models=3, n_samples=80, n_classes=8)
    path = tmp_path / "m.npz"
    bd.save_predictions(path, labels, logits=logits, train_counts=COUNTS)
    code, stdout, stderr = run_cli("decompose", path, "--out", tmp_path / "pop")
    assert code == 0, stderr
    assert "population estimator over D = 3" in stdout
    assert "variance_plugin" in pd.read_csv(tmp_path / "pop" / "per_split.csv").columns
    code, stdout, stderr = run_cli("decompose", path, "--estimator", "plugin", "--out",
                                   tmp_path / "plug")
    assert code == 0 and "plug-in terms of these D = 3" in stdout
    assert "variance_plugin" not in pd.read_csv(tmp_path / "plug" / "per_split.csv").columns
    two = tmp_path / "two.npz"
    bd.save_predictions(two, labels, logits=logits[:2], train_counts=COUNTS)
    code, stdout, stderr = run_cli("decompose", two, "--out", tmp_path / "two")
    assert code == 0
    assert stderr.strip().splitlines() == [
        line for line in stderr.strip().splitlines() if line.startswith("bvkit: warning:")]
    assert "reporting the plug-in terms" in stderr


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_subset_terms_equal_the_kernel_on_each_subset(kind):
    """The jackknife's fast path (totals less the models left out) gives the fused kernel's
    terms of every subset it is asked for: all, all but one, all but two."""
    from bvkit.decomposition import terms as T
    labels, logits, _ = random_set(seed=19, n_models=5, n_samples=70, n_classes=8)
    scores = logits if kind == "logits" else np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    correct = np.empty((5, 70), bool)
    fn = T.subset_terms(scores.astype(np.float32), labels, kind=kind, correct=correct)
    np.testing.assert_array_equal(correct, scores.argmax(2) == labels)
    every, without_one, without_two = P.leave_out_sets(5)
    for keep in [every, *without_one, *without_two.values()]:
        mine = fn(keep)
        theirs = T.score_terms(scores[keep], labels, kind)
        for loss, cols in theirs.items():
            for col, values in cols.items():
                np.testing.assert_allclose(mine[loss][col], values, atol=2e-6,
                                           err_msg=f"{keep} {loss} {col}")


def test_experts_population_terms_keep_their_identity_and_match_the_model_for_identical_experts():
    """The experts' decomposition under the population estimator: ensemble_loss = average_bias
    + average_variance - diversity still holds; identical experts give the model's own
    corrected bias and variance (and intervals); ensemble_loss and diversity are uncorrected."""
    labels, logits, _ = random_set(seed=21, n_models=5, n_samples=150, n_classes=8)
    rng = np.random.default_rng(21)
    experts = logits[:, None] + rng.standard_normal((5, 3, 150, 8)) * 0.7
    mean = experts.mean(axis=1)
    result = bd.decompose(labels, logits=mean, expert_logits=experts, train_counts=COUNTS,
                          loss="all", bootstrap=30)
    plugin = bd.decompose(labels, logits=mean, expert_logits=experts, train_counts=COUNTS,
                          loss="all", estimator="plugin")
    mine, theirs = result.experts.per_split, plugin.experts.per_split
    assert result.experts.settings["model"]["estimator"] == "population"
    np.testing.assert_allclose(mine["ensemble_loss"], mine["average_bias"]
                               + mine["average_variance"] - mine["diversity"], atol=1e-9)
    for col in ("ensemble_loss", "diversity"):
        np.testing.assert_allclose(mine[col], theirs[col], atol=1e-9)
    for col in ("average_bias", "average_variance"):
        np.testing.assert_allclose(mine[f"{col}_plugin"], theirs[col], atol=1e-9)
    assert (mine["average_variance"] > theirs["average_variance"]).all()
    # identical experts: the single model's population decomposition, intervals included
    same = np.repeat(logits[:, None], 3, axis=1)
    both = bd.decompose(labels, logits=logits, expert_logits=same, train_counts=COUNTS,
                        loss="cross-entropy", bootstrap=30, seed=2)
    model = both.per_split.set_index("split")
    ex = both.experts.per_split.set_index("split")
    for col, main in (("average_bias", "bias"), ("average_variance", "variance")):
        for suffix in ("", "_lo", "_hi"):
            np.testing.assert_allclose(ex[col + suffix], model[main + suffix], atol=5e-5,
                                       equal_nan=True, err_msg=col + suffix)
    assert set(result.experts.leave_one_out) == {("model", "squared"), ("model", "cross-entropy")}
