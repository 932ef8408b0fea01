"""Cross-check against mlxtend's ``bias_variance_decomp`` (0-1 loss) on the same predictions."""

import mlxtend.evaluate as mlxtend_evaluate
import numpy as np
import pytest

import bvkit.decomposition as bd


class RecordingNearestCentroid:
    """A deterministic classifier that records every prediction mlxtend asks it for."""

    def __init__(self):
        self.recorded = []

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([X[y == c].mean(0) for c in self.classes_])
        return self

    def predict(self, X):
        dist = ((X[:, None, :] - self.centroids_[None]) ** 2).sum(-1)
        pred = self.classes_[dist.argmin(1)]
        self.recorded.append(pred)
        return pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_one_bias_and_variance_match_mlxtend(seed):
    rng = np.random.default_rng(seed)
    n_classes, dim = 4, 2
    centres = rng.standard_normal((n_classes, dim)) * 1.5
    y_train = rng.integers(0, n_classes, 80)
    y_test = rng.integers(0, n_classes, 60)
    X_train = centres[y_train] + rng.standard_normal((80, dim))
    X_test = centres[y_test] + rng.standard_normal((60, dim))
    model = RecordingNearestCentroid()
    loss, bias, var = mlxtend_evaluate.bias_variance_decomp(
        model, X_train, y_train, X_test, y_test, loss="0-1_loss", num_rounds=25,
        random_seed=seed)
    preds = np.stack(model.recorded)
    assert preds.shape == (25, 60)
    ours = bd.decompose(y_test, preds=preds, loss="zero-one", estimator="plugin").per_sample
    # mlxtend averages over test samples (not classes): compare the per-sample means
    assert ours["bias"].mean() == pytest.approx(bias, abs=1e-12)
    assert ours["variance"].mean() == pytest.approx(var, abs=1e-12)
    assert ours["error"].mean() == pytest.approx(loss, abs=1e-12)
    assert 0 < var < 1 and bias > 0  # the check is not vacuous
