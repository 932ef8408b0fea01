"""Population terms and the delete-one-subset jackknife (bvkit.decomposition.population):
hand-worked corrections, the identity, exact jackknife of a linear statistic, pairing, D = 1/2,
and unbiasedness by simulation against a known population (docs/bias_variance.md)."""

import warnings

import numpy as np
import pytest
from scipy import stats

from bvkit.decomposition import population as P
from decompose_helpers import lt_family, population_truth
from bvkit.decomposition.grouping import Groups
from bvkit.errors import BvkitError

# D = 3 models, N = 2 samples, C = 2 classes, written out
TINY_PROBS = np.array([
    [[0.9, 0.1], [0.5, 0.5]],
    [[0.6, 0.4], [0.5, 0.5]],
    [[0.3, 0.7], [0.2, 0.8]],
])
TINY_LABELS = np.array([0, 1])
# sample 0: pbar (0.6, 0.4), V = (0.18 + 0 + 0.18)/3 = 0.12, B = 0.4^2 + 0.4^2 = 0.32,
#   error = (0.02 + 0.32 + 0.98)/3 = 0.44; V* = 0.12 * 3/2 = 0.18, B* = 0.32 - 0.18/3 = 0.26
#   (= mean of <p_i - e_0, p_j - e_0> over pairs: (0.08 + 0.14 + 0.56)/3)
# sample 1: pbar (0.4, 0.6), V = (0.02 + 0.02 + 0.08)/3 = 0.04, B = 0.32, error = 0.36;
#   V* = 0.06, B* = 0.32 - 0.06/3 = 0.30
TINY = {"error": [0.44, 0.36], "bias": [0.26, 0.30], "variance": [0.18, 0.06],
        "bias_plugin": [0.32, 0.32], "variance_plugin": [0.12, 0.04]}


def test_squared_corrections_by_hand():
    terms = P.population_terms(TINY_LABELS, probs=TINY_PROBS, loss="squared")
    assert set(terms) == set(P.POPULATION_COLUMNS)
    for col, expected in TINY.items():
        np.testing.assert_allclose(terms[col], expected, atol=1e-6, err_msg=col)  # float32 kernel


def test_squared_from_logits_equals_from_probs():
    logits = np.log(TINY_PROBS) + 3.0  # a shift per row does not change the softmax
    a = P.population_terms(TINY_LABELS, logits=logits, loss="squared")
    for col, expected in TINY.items():
        np.testing.assert_allclose(a[col], expected, atol=1e-6)


def test_identity_and_plugin_match_terms():
    from bvkit.decomposition.terms import cross_entropy_terms, squared_terms
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 30, 5)) * 2
    labels = rng.integers(0, 5, 30)
    sq = P.population_terms(labels, logits=logits, loss="squared")
    np.testing.assert_allclose(sq["bias"] + sq["variance"], sq["error"], atol=1e-12)
    np.testing.assert_allclose(sq["bias_plugin"] + sq["variance_plugin"], sq["error"],
                               atol=1e-12)
    ref = squared_terms(labels, logits=logits)
    for col in ("error", "bias", "variance"):
        np.testing.assert_allclose(sq[col if col == "error" else f"{col}_plugin"], ref[col],
                                   atol=2e-6)
    ce = P.population_terms(labels, logits=logits, loss="cross-entropy")
    np.testing.assert_allclose(ce["bias"] + ce["variance"], ce["error"], atol=1e-5)
    ref = cross_entropy_terms(labels, logits=logits)
    for col in ("error", "bias", "variance"):
        np.testing.assert_allclose(ce[col if col == "error" else f"{col}_plugin"], ref[col],
                                   atol=2e-5)


def test_jackknife_correction_of_the_squared_terms_is_the_closed_form():
    """The delete-one bias correction of B and V is V* = V D/(D-1) and B* = B - V*/D (the
    U-statistics), computed here in float64 from the definitions."""
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=(6, 10))
    labels = rng.integers(0, 4, 10)
    full = P.population_terms(labels, probs=probs, loss="squared")
    pbar = probs.mean(axis=0)
    variance = ((probs - pbar) ** 2).sum(axis=2).mean(axis=0)
    bias = ((pbar - np.eye(4)[labels]) ** 2).sum(axis=1)
    np.testing.assert_allclose(full["variance"], variance * 6 / 5, atol=1e-6)
    np.testing.assert_allclose(full["bias"], bias - variance / 5, atol=1e-6)
    np.testing.assert_allclose(full["variance_plugin"], variance, atol=1e-6)


def test_corrected_leave_one_out_values_by_hand():
    """Row k of the corrected leave-one-out terms is the correction of the D - 1 models left
    without k; the plug-in rows are those models' plug-in terms."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((4, 12, 3))
    labels = rng.integers(0, 3, 12)
    from bvkit.decomposition.terms import score_terms
    result = P.jackknife_terms(lambda keep: score_terms(logits[keep], labels), 4)
    for k in range(4):
        rest = np.delete(logits, k, axis=0)
        alone = P.jackknife_terms(lambda keep: score_terms(rest[keep], labels), 3)
        for loss, terms in result.items():
            for col in terms.corrected:
                np.testing.assert_allclose(terms.corrected_loo[col][k],
                                           alone[loss].corrected[col], atol=1e-9,
                                           err_msg=f"{loss} {col}")
                np.testing.assert_allclose(terms.plugin_loo[col][k], alone[loss].plugin[col],
                                           atol=1e-9)


def test_jackknife_by_hand_on_tiny_split_variance():
    # leave out model 1, 2, 3: split means of V* (0.09 + 0.09)/2, (0.36 + 0.09)/2, (0.09 + 0)/2
    result = P.population_split_jackknife(TINY_LABELS, probs=TINY_PROBS)["variance"]
    np.testing.assert_allclose(result.estimate, [0.12], atol=1e-6)  # float32 kernel
    np.testing.assert_allclose(result.replicates[:, 0], [0.09, 0.225, 0.045], atol=1e-6)
    se = np.sqrt(2 / 3 * (0.03**2 + 0.105**2 + 0.075**2))
    np.testing.assert_allclose(result.se, [se], atol=1e-6)
    lo, hi = result.interval(0.95)
    q = stats.t.ppf(0.975, 2)
    np.testing.assert_allclose([lo[0], hi[0]], [0.12 - q * se, 0.12 + q * se], atol=1e-5)


@pytest.mark.parametrize("n_models", [3, 5, 10])
def test_jackknife_of_a_mean_is_its_exact_standard_error(n_models):
    x = np.random.default_rng(n_models).standard_normal(n_models) * 3 + 1
    jk = P.jackknife(lambda keep: x[keep].mean(), n_models)
    assert jk.estimate == pytest.approx(x.mean())
    assert jk.se == pytest.approx(x.std(ddof=1) / np.sqrt(n_models), rel=1e-12)
    assert jk.dof == n_models - 1


def test_pairing_identical_methods_gives_zero_width():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 40, 4))
    labels = rng.integers(0, 4, 40)
    groups = Groups.build(labels, 4, train_counts=[500, 60, 30, 5])
    for loss in P.POPULATION_LOSSES:
        diff = P.population_split_difference(labels, logits_a=logits, logits_b=logits.copy(),
                                             loss=loss, groups=groups)
        for col, result in diff.items():
            lo, hi = result.interval()
            assert np.all(result.estimate == 0) and np.all(lo == 0) and np.all(hi == 0), col
        # unpaired (another order of the same training sets) is not zero-width
        shuffled = P.population_split_difference(labels, logits_a=logits, logits_b=logits[::-1],
                                                 loss=loss, groups=groups)
        assert np.all(shuffled["variance"].se > 0)


def test_two_models_warn_and_one_is_refused():
    labels, probs = TINY_LABELS, TINY_PROBS
    with pytest.warns(P.FewModelsWarning, match="1 degree of freedom"):
        result = P.population_split_jackknife(labels, probs=probs[:2])
    assert np.isfinite(result["error"].interval()[0]).all()
    assert np.isnan(result["variance"].se).all()  # one model left: no corrected variance
    with pytest.warns(P.FewModelsWarning):
        P.jackknife(lambda keep: keep.size, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.population_terms(labels, probs=probs[:2], loss="squared")  # point estimates: fine at D = 2
        P.jackknife(lambda keep: keep.size, 3)
    with pytest.raises(BvkitError, match="at least 2 models"):
        P.population_terms(labels, probs=probs[:1], loss="squared")
    with pytest.raises(BvkitError, match="at least 2 models"):
        P.jackknife(lambda keep: keep.size, 1)
    with pytest.raises(BvkitError, match="at least 2 models"):
        P.population_split_jackknife(labels, probs=probs[:1])
    with pytest.raises(BvkitError, match="same training sets"):
        P.population_split_difference(labels, probs_a=probs, probs_b=probs[:2])


# --- unbiasedness against a known population --------------------------------------------------

N_CLASSES, PER_CLASS = 10, 20
SMOOTH_LOSSES = ("squared", "cross-entropy")  # zero-one: measured in experiments/coverage.py


def _family(seed=0):
    return lt_family(N_CLASSES, PER_CLASS, seed)


@pytest.fixture(scope="module")
def population():
    labels, draw = _family()
    return labels, draw, population_truth(labels, draw, 20_000)


def test_corrected_terms_are_unbiased_and_plugin_variance_is_low(population):
    labels, draw, truth = population
    rng = np.random.default_rng(7)
    n_models, n_reps = 5, 400
    sums = {loss: dict.fromkeys(P.POPULATION_COLUMNS, 0.0) for loss in SMOOTH_LOSSES}
    for _ in range(n_reps):
        logits = draw(n_models, rng)
        for loss in SMOOTH_LOSSES:
            terms = P.population_terms(labels, logits=logits, loss=loss)
            for col in P.POPULATION_COLUMNS:
                sums[loss][col] += terms[col].mean() / n_reps
    for loss in SMOOTH_LOSSES:
        mean = sums[loss]
        for col in ("bias", "variance"):
            assert mean[col] == pytest.approx(truth[loss][col], rel=0.03), (loss, col)
        # plug-in: variance low by about (D - 1)/D = 0.8 (squared exactly in expectation)
        ratio = mean["variance_plugin"] / truth[loss]["variance"]
        assert 0.75 < ratio < 0.85, (loss, ratio)
        assert mean["bias_plugin"] > truth[loss]["bias"]
