"""Coverage of the population estimators at D = 5 on a simulated family with a known population
truth: a small version of ``experiments/coverage.py`` (whose results, zero-one included, are in
``experiments/results/coverage.md``).

Smooth losses only (squared, cross-entropy): the corrected split bias and variance are unbiased
to within a few %, the plug-in variance is low by about (D - 1)/D, the jackknife-t interval of
``population_split_jackknife`` covers the truth close to 95 % of the time, and the plug-in
percentile interval of ``decompose(..., estimator="plugin", bootstrap=B)`` (test samples only)
almost never covers the population variance.
"""

import numpy as np
import pytest

from bvkit.decomposition import population as P
from decompose_helpers import lt_family, population_truth
from bvkit.decomposition.core import decompose

N_CLASSES, PER_CLASS = 10, 10
N_MODELS = 5
N_DRAWS = 20_000  # population truth: the plug-in bias of the truth itself is V / N_DRAWS
N_REPS = 300  # jackknife repetitions
N_REPS_PLUGIN = 60  # decompose(..., bootstrap) repetitions: slower, and the gap is wide
N_BOOT = 100
LOSSES = ("squared", "cross-entropy")
TERMS = ("bias", "variance")


def _family(seed=0):
    return lt_family(N_CLASSES, PER_CLASS, seed)


def _truth(labels, draw):
    """Population split (``all``: mean of the class means) bias and variance per loss."""
    return population_truth(labels, draw, N_DRAWS)


@pytest.fixture(scope="module")
def simulation():
    labels, draw = _family()
    truth = _truth(labels, draw)
    rng = np.random.default_rng(7)
    jack = {loss: {t: {"est": [], "plugin": [], "cover": []} for t in TERMS} for loss in LOSSES}
    for _ in range(N_REPS):
        logits = draw(N_MODELS, rng)
        for loss in LOSSES:
            result = P.population_split_jackknife(labels, logits=logits, loss=loss)
            for term in TERMS:
                lo, hi = result[term].interval(0.95)
                rec = jack[loss][term]
                rec["est"].append(result[term].estimate[0])
                rec["plugin"].append(result[f"{term}_plugin"].estimate[0])
                rec["cover"].append(lo[0] <= truth[loss][term] <= hi[0])
    plugin_cover = {loss: {t: [] for t in TERMS} for loss in LOSSES}
    for rep in range(N_REPS_PLUGIN):
        logits = draw(N_MODELS, rng)
        frame = decompose(labels, logits=logits, loss=list(LOSSES), bootstrap=N_BOOT,
                          estimator="plugin", seed=rep, n_jobs=1).per_split
        for loss in LOSSES:
            row = frame[(frame["loss"] == loss) & (frame["split"] == "all")].iloc[0]
            for term in TERMS:
                t = truth[loss][term]
                plugin_cover[loss][term].append(row[f"{term}_lo"] <= t <= row[f"{term}_hi"])
    return truth, jack, plugin_cover


@pytest.mark.parametrize("loss", LOSSES)
def test_corrected_split_terms_are_unbiased_and_plugin_variance_is_low(simulation, loss):
    truth, jack, _ = simulation
    for term in TERMS:
        mean = np.mean(jack[loss][term]["est"])
        # measured within 0.6 % of the truth; the Monte Carlo sd of this mean over N_REPS is
        # about 0.6 % (variance) and 0.15 % (bias) of the truth, so 5 % is > 7 sd away
        assert mean == pytest.approx(truth[loss][term], rel=0.05), (loss, term)
    # plug-in variance: low by about (D - 1)/D = 0.8, i.e. 20 % (measured 0.80 for both
    # losses, Monte Carlo sd 0.005): the corrected mean's 5 % test above fails for it
    ratio = np.mean(jack[loss]["variance"]["plugin"]) / truth[loss]["variance"]
    assert ratio <= 0.85, (loss, ratio)


@pytest.mark.parametrize("loss", LOSSES)
def test_jackknife_t_interval_covers_the_population_truth(simulation, loss):
    _, jack, _ = simulation
    for term in TERMS:
        coverage = np.mean(jack[loss][term]["cover"])
        # measured 93-98 % over four seeds (nominal 95 %); N_REPS = 300: the Monte Carlo sd
        # of a coverage near 95 % is 1.3 points, so 85 % lies about 6 sd below. The same
        # interval around the plug-in variance covers 51-55 % here: it fails
        assert coverage >= 0.85, (loss, term, coverage)


@pytest.mark.parametrize("loss", LOSSES)
def test_plugin_percentile_interval_misses_the_population_variance(simulation, loss):
    _, _, plugin_cover = simulation
    coverage = np.mean(plugin_cover[loss]["variance"])
    # about test samples only, around a value low by 20 %: it almost never covers the
    # population variance (measured 5-7 %; N_REPS_PLUGIN = 60: the Monte Carlo sd of a
    # coverage near 6 % is 3 points, so 30 % is about 8 sd above). Its bias interval is wide
    # at 10 test samples per class and does cover (measured 97-100 %): not asserted.
    assert coverage < 0.3, (loss, coverage)
