"""Per-sample maths: exact identities, a float64 oracle, hand-worked cases, tie-breaking."""

import math

import numpy as np
import pytest
from decompose_helpers import oracle, random_set, softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bvkit.decomposition as bd
from bvkit.decomposition import terms as T
from bvkit.errors import BvkitError

TOL = dict(rtol=1e-5, atol=2e-6)


@st.composite
def logit_sets(draw):
    n_models = draw(st.integers(2, 6))
    n_samples = draw(st.integers(1, 7))
    n_classes = draw(st.integers(2, 6))
    logits = draw(hnp.arrays(np.float32, (n_models, n_samples, n_classes),
                             elements=st.floats(-15, 15, width=32)))
    labels = draw(hnp.arrays(np.int64, n_samples, elements=st.integers(0, n_classes - 1)))
    return labels, logits


@st.composite
def pred_sets(draw):
    n_models = draw(st.integers(2, 9))
    n_samples = draw(st.integers(1, 8))
    n_classes = draw(st.integers(2, 4))  # few classes: many ties in the vote
    classes = st.integers(0, n_classes - 1)
    preds = draw(hnp.arrays(np.int64, (n_models, n_samples), elements=classes))
    labels = draw(hnp.arrays(np.int64, n_samples, elements=st.integers(0, n_classes - 1)))
    return labels, preds


@settings(max_examples=60, deadline=None)
@given(logit_sets())
def test_identities_and_oracle_on_random_logits(case):
    labels, logits = case
    got = T.score_terms(logits, labels, "logits")
    want = oracle(labels, softmax(logits), argmax_of=logits)
    for loss in ("squared", "cross-entropy"):
        g = got[loss]
        np.testing.assert_allclose(g["error"], g["bias"] + g["variance"], **TOL)
        for col in ("error", "bias", "variance", "accuracy"):
            np.testing.assert_allclose(g[col], want[loss][col], err_msg=f"{loss} {col}", **TOL)
    zo = got["zero-one"]
    np.testing.assert_allclose(zo["error"], zo["bias"] + zo["c2"] * zo["variance"], atol=1e-12)
    for col in ("error", "bias", "variance", "c2", "accuracy"):
        np.testing.assert_allclose(zo[col], want["zero-one"][col], err_msg=col, **TOL)


@settings(max_examples=60, deadline=None)
@given(pred_sets())
def test_zero_one_identity_and_oracle_on_tied_votes(case):
    labels, preds = case
    zo = bd.zero_one_terms(labels, preds=preds)
    np.testing.assert_allclose(zo["error"], zo["bias"] + zo["c2"] * zo["variance"], atol=1e-12)
    np.testing.assert_allclose(zo["net_variance"], zo["c2"] * zo["variance"])
    onehot = np.eye(max(preds.max(), labels.max()) + 1)[preds]  # one-hot rows: argmax = preds
    want = oracle(labels, onehot)["zero-one"]
    for col in ("error", "bias", "variance", "c2"):
        np.testing.assert_allclose(zo[col], want[col], err_msg=col, atol=1e-12)
    sq = bd.squared_terms(labels, preds=preds)
    np.testing.assert_allclose(sq["error"], sq["bias"] + sq["variance"], atol=1e-12)
    want_sq = oracle(labels, onehot)["squared"]
    for col in ("error", "bias", "variance"):
        np.testing.assert_allclose(sq[col], want_sq[col], atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(logit_sets())
def test_group_identity_error_is_bias_plus_net_variance(case):
    labels, logits = case
    result = bd.decompose(labels, logits=logits, loss="zero-one", train_counts=None)
    for frame in (result.per_class.dropna(subset=["error"]), result.per_split):
        np.testing.assert_allclose(frame["error"], frame["bias"] + frame["net_variance"],
                                   atol=1e-12)
        np.testing.assert_allclose(
            frame["variance"], frame["variance_unbiased"] + frame["variance_biased"], atol=1e-12)


def test_squared_hand_worked():
    # y = 0; p1 = (1, 0), p2 = (.5, .5): errors 0 and .5 -> .25; pbar = (.75, .25):
    # bias = .25^2 + .25^2 = .125; variance = mean(.125, .125) = .125
    probs = np.array([[[1.0, 0.0]], [[0.5, 0.5]]])
    got = bd.squared_terms([0], probs=probs)
    assert got["error"][0] == pytest.approx(0.25, abs=1e-7)
    assert got["bias"][0] == pytest.approx(0.125, abs=1e-7)
    assert got["variance"][0] == pytest.approx(0.125, abs=1e-7)
    assert got["accuracy"][0] == pytest.approx(1.0)  # argmax of (.5, .5) is class 0


def test_cross_entropy_hand_worked():
    # y = 0; p1 = (.8, .2), p2 = (.2, .8): error = (-ln .8 - ln .2) / 2 = 0.916291;
    # geometric mean (.4, .4) -> pibar = (.5, .5): bias = ln 2 = 0.693147;
    # variance = -ln(.4 + .4) = 0.223144
    probs = np.array([[[0.8, 0.2]], [[0.2, 0.8]]])
    for got in (bd.cross_entropy_terms([0], probs=probs),
                bd.cross_entropy_terms([0], logits=np.log(probs) + 3.0)):
        assert got["error"][0] == pytest.approx(0.916291, abs=1e-6)
        assert got["bias"][0] == pytest.approx(0.693147, abs=1e-6)
        assert got["variance"][0] == pytest.approx(0.223144, abs=1e-6)


def test_zero_one_hand_worked():
    # sample 0, y = 0, votes 0,1,1,2,2: tie 1 vs 2 -> main 1; bias 1; error 4/5; variance 3/5;
    #   c2 = -P(yhat = y | yhat != m) = -1/3; net = -1/5; biased variance 3/5.
    # sample 1, y = 2, votes 2,2,2,0,1: main 2; bias 0; error = variance = 2/5; c2 = 1.
    preds = np.array([[0, 2], [1, 2], [1, 2], [2, 0], [2, 1]])
    got = bd.zero_one_terms([0, 2], preds=preds)
    np.testing.assert_allclose(got["error"], [0.8, 0.4])
    np.testing.assert_allclose(got["bias"], [1, 0])
    np.testing.assert_allclose(got["variance"], [0.6, 0.4])
    np.testing.assert_allclose(got["c2"], [-1 / 3, 1])
    np.testing.assert_allclose(got["net_variance"], [-0.2, 0.4])
    np.testing.assert_allclose(got["variance_unbiased"], [0.0, 0.4])
    np.testing.assert_allclose(got["variance_biased"], [0.6, 0.0])
    # over both samples: error .6 = bias .5 + net variance .1
    assert got["error"].mean() == pytest.approx(got["bias"].mean() + got["net_variance"].mean())


def test_zero_one_biased_sample_with_no_disagreement_has_c2_zero():
    got = bd.zero_one_terms([0], preds=np.array([[1], [1], [1]]))
    assert got["bias"][0] == 1 and got["variance"][0] == 0 and got["c2"][0] == 0
    assert got["error"][0] == 1


def test_main_prediction_ties_go_to_smallest_class():
    preds = np.array([[3, 2, 5], [1, 0, 4], [3, 2, 4], [1, 0, 5]])
    np.testing.assert_array_equal(bd.main_prediction(preds), [1, 0, 4])
    # the same through scores: argmax ties inside a model also go to the smallest class
    logits = np.zeros((2, 1, 3), np.float32)
    logits[0, 0, 2] = logits[1, 0, 1] = 1.0
    got = bd.zero_one_terms([2], logits=logits)
    assert got["bias"][0] == 1  # main prediction 1 (tie 1 vs 2), label 2
    assert bd.zero_one_terms([0], logits=np.zeros((3, 1, 4), np.float32))["bias"][0] == 0


def test_cross_entropy_from_extreme_logits_stays_finite():
    logits = np.array([[[500.0, -500.0]], [[-400.0, 400.0]]], np.float32)
    got = bd.cross_entropy_terms([0], logits=logits)
    # log p from log-sum-exp: model 1 has log p_y = -800, model 0 has 0 -> error 400
    assert got["error"][0] == pytest.approx(400.0, rel=1e-6)
    assert math.isfinite(got["bias"][0]) and math.isfinite(got["variance"][0])
    assert got["error"][0] == pytest.approx(got["bias"][0] + got["variance"][0], rel=1e-6)


def test_probs_are_clipped_at_epsilon():
    probs = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    got = bd.cross_entropy_terms([1], probs=probs)
    assert got["error"][0] == pytest.approx(-math.log(bd.PROBS_EPSILON), rel=1e-5)


def test_probs_and_logits_agree():
    labels, logits, _ = random_set(seed=3, n_samples=50)
    from_logits = T.score_terms(logits, labels, "logits")
    from_probs = T.score_terms(softmax(logits).astype(np.float32), labels, "probs")
    for loss in T.LOSSES:
        for col in ("error", "bias", "variance", "accuracy"):
            np.testing.assert_allclose(from_probs[loss][col], from_logits[loss][col],
                                       rtol=1e-4, atol=1e-5, err_msg=f"{loss} {col}")


def test_float16_conversion_is_exact_for_every_half():
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = np.isfinite(halves)
    out = np.empty(halves.shape, np.float32)
    T.to_float32(halves, out)
    np.testing.assert_array_equal(out[finite], halves[finite].astype(np.float32))
    assert (np.abs(out[~finite]) >= T.finite_limit(np.float16)).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_scores_are_refused(bad, dtype):
    labels, logits, _ = random_set(n_samples=10, dtype=dtype)
    logits[1, 4, 2] = bad
    with pytest.raises(BvkitError, match="NaN or inf"):
        T.score_terms(logits, labels, "logits")


def test_cross_entropy_needs_scores():
    with pytest.raises(BvkitError, match="cross-entropy needs scores"):
        T.pred_terms(np.zeros((2, 3), int), np.zeros(3, int), ("cross-entropy",))


def test_weighted_terms_equal_replicated_models():
    labels, logits, _ = random_set(seed=5, n_models=4, n_samples=30, n_classes=6)
    weights = np.array([[1, 1, 1, 1], [2, 0, 1, 1], [0, 0, 4, 0]], float)
    block = logits.astype(np.float32).copy()
    got = T.weighted_block_terms(block, labels, weights)
    for b, w in enumerate(weights):
        models = np.repeat(np.arange(4), w.astype(int))
        want = T.score_terms(logits[models], labels, "logits")
        for loss in T.LOSSES:
            for col in T.columns_of(loss):
                np.testing.assert_allclose(got[loss][col][b], want[loss][col], rtol=1e-5,
                                           atol=2e-6, err_msg=f"{b} {loss} {col}")
    preds = logits.argmax(-1)
    got = T.weighted_pred_terms(preds, labels, weights)
    for b, w in enumerate(weights):
        models = np.repeat(np.arange(4), w.astype(int))
        want = T.pred_terms(preds[models], labels)
        for loss in ("squared", "zero-one"):
            for col in T.columns_of(loss):
                np.testing.assert_allclose(got[loss][col][b], want[loss][col], atol=1e-12)
