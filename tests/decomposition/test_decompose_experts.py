"""The experts' bias-variance-diversity decomposition (Wood et al. 2023; docs/bias_variance.md):
its identities, its reductions to the single-model decomposition, a naive reference written
from the paper's definitions, the CLI outputs and the bad inputs it refuses."""

import math

import numpy as np
import pandas as pd
import pytest
from decompose_helpers import random_set

import bvkit.decomposition as bd
from bvkit.decomposition.experts import EXPERT_COLUMNS, expert_terms
from bvkit.errors import BvkitError

LOSSES = ("squared", "cross-entropy")
MAIN = {"ensemble_loss": "error", "average_bias": "bias", "average_variance": "variance"}


def experts_set(seed=0, n_models=4, n_experts=3, n_samples=150, n_classes=6, spread=1.0):
    """Expert logits sharing each model's signal, labels, counts; ``logits`` their mean."""
    labels, logits, counts = random_set(seed, n_models, n_samples, n_classes)
    rng = np.random.default_rng(seed + 100)
    experts = logits[:, None] + spread * rng.standard_normal((n_models, n_experts, n_samples,
                                                              n_classes))
    return labels, experts, experts.mean(axis=1), counts


# --- a deliberately naive reference: one sample, one model, one expert at a time, from the
# paper's definitions (Wood et al. 2023, Sec. 4-5), in plain Python floats ---

def _softmax(z):
    top = max(z)
    e = [math.exp(v - top) for v in z]
    return [v / sum(e) for v in e]


def _normalised_geometric_mean(dists):
    logs = [sum(math.log(p[c]) for p in dists) / len(dists) for c in range(len(dists[0]))]
    unnormalised = [math.exp(v) for v in logs]
    return [v / sum(unnormalised) for v in unnormalised]


def _kl(p, q):
    return sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))


def _sq(p, q):
    return sum((a - b) ** 2 for a, b in zip(p, q))


def naive_terms(labels, expert_logits):
    """loss -> column -> list over samples."""
    n_models, n_experts, n_samples, n_classes = np.shape(expert_logits)
    out = {loss: {col: [] for col in EXPERT_COLUMNS} for loss in LOSSES}
    for n in range(n_samples):
        y = int(labels[n])
        onehot = [1.0 if c == y else 0.0 for c in range(n_classes)]
        q = [[_softmax([float(v) for v in expert_logits[d][i][n]]) for i in range(n_experts)]
             for d in range(n_models)]
        # cross-entropy, combiner: normalised geometric mean
        ensembles = [_normalised_geometric_mean(q[d]) for d in range(n_models)]
        centres = [_normalised_geometric_mean([q[d][i] for d in range(n_models)])
                   for i in range(n_experts)]
        ce = out["cross-entropy"]
        ce["ensemble_loss"].append(sum(-math.log(e[y]) for e in ensembles) / n_models)
        ce["average_bias"].append(sum(-math.log(c[y]) for c in centres) / n_experts)
        ce["average_variance"].append(sum(
            sum(_kl(centres[i], q[d][i]) for d in range(n_models)) / n_models
            for i in range(n_experts)) / n_experts)
        ce["diversity"].append(sum(
            sum(_kl(ensembles[d], q[d][i]) for i in range(n_experts)) / n_experts
            for d in range(n_models)) / n_models)
        # squared, combiner: arithmetic mean
        means = [[sum(q[d][i][c] for i in range(n_experts)) / n_experts for c in range(n_classes)]
                 for d in range(n_models)]
        centres = [[sum(q[d][i][c] for d in range(n_models)) / n_models for c in range(n_classes)]
                   for i in range(n_experts)]
        sq = out["squared"]
        sq["ensemble_loss"].append(sum(_sq(m, onehot) for m in means) / n_models)
        sq["average_bias"].append(sum(_sq(c, onehot) for c in centres) / n_experts)
        sq["average_variance"].append(sum(
            sum(_sq(q[d][i], centres[i]) for d in range(n_models)) / n_models
            for i in range(n_experts)) / n_experts)
        sq["diversity"].append(sum(
            sum(_sq(q[d][i], means[d]) for i in range(n_experts)) / n_experts
            for d in range(n_models)) / n_models)
    return out


def test_terms_match_a_naive_implementation_of_the_papers_definitions():
    rng = np.random.default_rng(2023)
    labels = rng.integers(0, 4, 12)
    expert_logits = 1.5 * rng.standard_normal((3, 3, 12, 4))
    mine = expert_terms(labels, expert_logits)
    naive = naive_terms(labels, expert_logits)
    for loss in LOSSES:
        for col in EXPERT_COLUMNS:
            np.testing.assert_allclose(mine[loss][col], naive[loss][col], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{loss} {col}")
        assert np.all(np.asarray(naive[loss]["diversity"]) > 1e-3)  # a case with diversity


@pytest.mark.parametrize("seed, shape, dtype", [
    (0, (2, 2, 50, 3), np.float64), (1, (5, 4, 80, 10), np.float32),
    (2, (3, 6, 40, 7), np.float16)])
def test_both_identities_hold_to_float_precision(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, shape[3], shape[2])
    expert_logits = (3 * rng.standard_normal(shape)).astype(dtype)
    terms = expert_terms(labels, expert_logits)
    for loss in LOSSES:
        t = terms[loss]
        np.testing.assert_allclose(
            t["ensemble_loss"], t["average_bias"] + t["average_variance"] - t["diversity"],
            rtol=0, atol=1e-12)
        assert (t["diversity"] > 0).all() and (t["average_variance"] > 0).all()
    # and per class and per split, where the frames average them
    experts = bd.decompose_experts(labels, expert_logits, train_counts=rng.integers(1, 300, shape[3]),
                                   loss="all")
    for frame in (experts.per_class, experts.per_split):
        present = frame["n_test"] > 0
        f = frame[present]
        np.testing.assert_allclose(
            f["ensemble_loss"], f["average_bias"] + f["average_variance"] - f["diversity"],
            rtol=0, atol=1e-12)


def test_identical_experts_have_no_diversity_and_are_the_single_model_decomposition():
    labels, logits, counts = random_set(seed=3, n_models=5, n_samples=240, n_classes=8)
    expert_logits = np.repeat(logits[:, None], 3, axis=1)
    # the experts' decomposition is of these D models: the plug-in estimator's terms
    result = bd.decompose(labels, logits=logits, expert_logits=expert_logits, train_counts=counts,
                          loss="all", bootstrap=30, seed=4, estimator="plugin")
    experts = result.experts
    assert set(experts.per_split["loss"]) == set(LOSSES)  # zero-one has no such decomposition
    assert (experts.per_sample["diversity"].abs() < 1e-12).all()
    for loss in LOSSES:
        for attr, key in (("per_sample", "sample"), ("per_class", "class"), ("per_split", "split")):
            frame, main = getattr(experts, attr), getattr(result, attr)
            mine = frame[frame["loss"] == loss].set_index(key)
            theirs = main[main["loss"] == loss].set_index(key)
            for col, main_col in MAIN.items():
                np.testing.assert_allclose(mine[col], theirs[main_col], rtol=0, atol=2e-6,
                                           err_msg=f"{loss} {key} {col}")
    # the same bootstrap engine and resamples: the intervals agree too
    for col, main_col in MAIN.items():
        np.testing.assert_allclose(experts.per_split[f"{col}_lo"],
                                   result.per_split.loc[result.per_split["loss"] != "zero-one",
                                                        f"{main_col}_lo"], atol=2e-6)


def test_one_member_is_the_existing_decomposition():
    labels, logits, _ = random_set(seed=5, n_models=3, n_samples=100, n_classes=5)
    terms = expert_terms(labels, logits[:, None])  # M = 1, allowed here
    for loss in LOSSES:
        existing = bd.decompose(labels, logits=logits, loss=loss, estimator="plugin").per_sample
        assert np.all(np.abs(terms[loss]["diversity"]) < 1e-12)
        for col, main_col in MAIN.items():
            np.testing.assert_allclose(terms[loss][col], existing[main_col], atol=2e-6)


def test_cross_entropy_ensemble_loss_is_the_models_error_for_ride():
    """Softmax of the mean logits is the normalised geometric mean of the experts: the experts'
    ensemble loss is the main decomposition's cross-entropy error of the model's logits."""
    labels, experts, logits, counts = experts_set(seed=6)
    result = bd.decompose(labels, logits=logits.astype(np.float32), expert_logits=experts,
                          train_counts=counts, loss="cross-entropy")
    np.testing.assert_allclose(result.experts.per_class["ensemble_loss"],
                               result.per_class["error"], rtol=1e-6)
    assert result.experts.settings["model"]["routed"] is False
    # squared: the arithmetic mean of softmaxes is not the softmax of the mean
    squared = bd.decompose(labels, logits=logits, expert_logits=experts, train_counts=counts)
    assert not np.allclose(squared.experts.per_class["ensemble_loss"], squared.per_class["error"],
                           rtol=1e-3)


def test_model_bootstrap_uses_the_decompositions_replicates():
    labels, logits, counts = random_set(seed=7, n_models=4, n_samples=120, n_classes=6)
    identical = np.repeat(logits[:, None], 2, axis=1)
    result = bd.decompose(labels, logits=logits, expert_logits=identical, train_counts=counts,
                          loss="cross-entropy", bootstrap=25, bootstrap_models=True, seed=2)
    for col, main_col in MAIN.items():
        for bound in ("lo", "hi"):
            np.testing.assert_allclose(result.experts.per_class[f"{col}_{bound}"],
                                       result.per_class[f"{main_col}_{bound}"], atol=2e-6)
    labels, experts, logits, counts = experts_set(seed=8)
    split = bd.decompose_experts(labels, experts, logits, train_counts=counts, loss="all",
                                 bootstrap=40, bootstrap_models=True).per_split
    fixed = bd.decompose_experts(labels, experts, logits, train_counts=counts, loss="all",
                                 bootstrap=40).per_split
    split, fixed = split[split["n_classes"] > 0], fixed[fixed["n_classes"] > 0]
    assert len(split) >= 6 and not np.allclose(split["diversity_lo"], fixed["diversity_lo"])
    for col in EXPERT_COLUMNS:
        assert (split[f"{col}_lo"] <= split[f"{col}_hi"]).all()
        assert (fixed[f"{col}_lo"] <= fixed[col]).all() and (fixed[col] <= fixed[f"{col}_hi"]).all()


def test_chunks_do_not_change_the_numbers():
    labels, experts, logits, counts = experts_set(seed=9, n_samples=97)
    whole = bd.decompose_experts(labels, experts, logits, train_counts=counts, bootstrap=10,
                                 bootstrap_models=True)
    chunked = bd.decompose_experts(labels, experts, logits, train_counts=counts, bootstrap=10,
                                   bootstrap_models=True, chunk_size=7)
    pd.testing.assert_frame_equal(whole.per_class, chunked.per_class, rtol=1e-12)


def routed_set(seed=10):
    """A router's output: each sample's logits are the mean of its first k experts."""
    labels, experts, _, counts = experts_set(seed=seed, n_experts=3)
    rng = np.random.default_rng(seed)
    used = rng.integers(1, 4, size=(experts.shape[0], experts.shape[2]))  # experts per (model, sample)
    prefix = np.cumsum(experts, axis=1) / np.arange(1, 4)[None, :, None, None]
    logits = np.take_along_axis(prefix, (used - 1)[:, None, :, None], axis=1)[:, 0]
    return labels, experts, logits, counts


def test_a_routed_model_decomposes_its_experts_full_outputs():
    labels, experts, logits, counts = routed_set()
    result = bd.decompose(labels, logits=logits, expert_logits=experts, train_counts=counts,
                          loss="cross-entropy")
    assert result.experts.settings["model"]["routed"] is True
    unrouted = bd.decompose_experts(labels, experts, experts.mean(axis=1), train_counts=counts,
                                    loss="cross-entropy")
    pd.testing.assert_frame_equal(result.experts.per_class, unrouted.per_class)
    assert not np.allclose(result.experts.per_class["ensemble_loss"], result.per_class["error"])
    with pytest.raises(BvkitError, match="not the mean of all its experts"):
        bd.decompose(labels, logits=logits, expert_logits=experts, routed=False)


# --- the command line ---

@pytest.fixture
def expert_study(tmp_path):
    labels, experts, logits, counts = experts_set(seed=11, n_samples=120)
    root = tmp_path / "study"
    bd.save_predictions(root / "predictions" / "ride.npz", labels, logits=logits.astype(np.float32),
                        train_counts=counts, expert_logits=experts.astype(np.float32))
    bd.save_predictions(root / "predictions" / "ce.npz", labels,
                        logits=experts[:, 0].astype(np.float32), train_counts=counts)
    return root


def test_cli_writes_the_experts_csvs(run_cli, expert_study, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("decompose", expert_study, "--loss", "all", "--bootstrap", "20",
                                   "--out", out)
    assert code == 0, stderr
    per_class = pd.read_csv(out / "experts_per_class.csv")
    per_split = pd.read_csv(out / "experts_per_split.csv")
    for col in ("method", "loss", "class", "split", *EXPERT_COLUMNS, "diversity_lo",
                "average_bias_hi"):
        assert col in per_class.columns, col
    assert list(per_split.columns[:5]) == ["method", "loss", "split", "n_classes", "n_test"]
    assert set(per_split["method"]) == {"ride"} and set(per_split["loss"]) == set(LOSSES)
    assert len(per_split) == 2 * 4 and len(per_class) == 2 * 6
    direct = bd.decompose_file(expert_study / "predictions" / "ride.npz", loss="all",
                               bootstrap=20).experts.per_split
    np.testing.assert_allclose(per_split["diversity_hi"], direct["diversity_hi"])
    assert "experts (ensemble_loss = average_bias" in stdout and "diversity" in stdout
    assert str(out / "experts_per_split.csv") in stdout


def test_cli_without_expert_logits_writes_no_experts_files(run_cli, expert_study, tmp_path):
    out = tmp_path / "plain"
    code, stdout, stderr = run_cli("decompose", expert_study / "predictions" / "ce.npz",
                                   "--out", out)
    assert code == 0, stderr
    assert not (out / "experts_per_class.csv").exists() and "experts" not in stdout
    code, _, stderr = run_cli("decompose", expert_study, "--loss", "zero-one", "--out", out)
    assert code == 0 and "zero-one has no bias-variance-diversity decomposition" in stderr


def _bad_expert_inputs(tmp):
    labels, experts, logits, counts = experts_set(seed=12, n_samples=30, n_classes=5)
    cases = {}

    def case(name, message, **arrays):
        path = tmp / f"{name}.npz"
        np.savez(path, **{"labels": labels, "logits": logits, "train_counts": counts, **arrays})
        cases[name] = (path, message)

    case("one_expert", "expert_logits hold 1 expert(s)", expert_logits=experts[:, :1],
         logits=experts[:, 0])
    case("samples", "expert_logits have shape (4, 3, 29, 5)", expert_logits=experts[:, :, :-1])
    case("models", "expert_logits have shape (3, 3, 30, 5)", expert_logits=experts[:-1])
    case("classes", "expert_logits have shape (4, 3, 30, 4)", expert_logits=experts[..., :-1])
    case("three_axes", "expert_logits must have shape (D, M, N, C)", expert_logits=experts[0])
    nan = experts.copy()
    nan[1, 2, 3, 4] = np.nan
    case("nan", "expert_logits contain NaN or inf", expert_logits=nan)
    inf = experts.astype(np.float16)
    inf[0, 1, 7, 0] = np.inf
    case("inf", "expert_logits contain NaN or inf", expert_logits=inf)
    case("mean", "expert_logits do not match logits: model 0, sample 0",
         expert_logits=experts + np.arange(3)[None, :, None, None])
    shuffled = experts[:, :, np.random.default_rng(0).permutation(30)]
    case("other_order", "expert_logits do not match logits", expert_logits=shuffled)
    case("integer", "expert_logits must be floating point",
         expert_logits=experts.astype(np.int64))
    path = tmp / "probs.npz"
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.savez(path, labels=labels, probs=e / e.sum(-1, keepdims=True), expert_logits=experts)
    cases["probs"] = (path, "expert_logits need logits beside them")
    return cases


BAD = ["one_expert", "samples", "models", "classes", "three_axes", "nan", "inf", "mean",
       "other_order", "integer", "probs"]


@pytest.mark.parametrize("name", BAD)
def test_bad_expert_logits_are_one_line_and_exit_2(run_cli, tmp_path, name):
    path, message = _bad_expert_inputs(tmp_path)[name]
    code, stdout, stderr = run_cli("decompose", path, "--loss", "all", "--out", tmp_path / "o")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"bvkit: error: {path}: ") and message in lines[0], lines[0]
    assert "Traceback" not in stderr + stdout


def test_bad_expert_loss_is_refused():
    labels, experts, logits, _ = experts_set(seed=13, n_samples=20)
    with pytest.raises(BvkitError, match="no bias-variance-diversity decomposition for loss zero-one"):
        bd.decompose(labels, logits=logits, expert_logits=experts, expert_loss="zero-one")


# --- learned expert weights (SADE): expert_weights (D, M) ---

def weighted_set(seed=20, n_models=4, n_experts=3, n_samples=60, n_classes=5):
    """Expert logits, labels, counts, per-model convex weights and ``logits`` their weighted sum."""
    labels, experts, _, counts = experts_set(seed, n_models, n_experts, n_samples, n_classes)
    weights = np.random.default_rng(seed).dirichlet(np.ones(n_experts), size=n_models)
    return labels, experts, np.einsum("dm,dmnc->dnc", weights, experts), counts, weights


def test_expert_weights_round_trip_through_a_prediction_file(tmp_path):
    labels, experts, logits, counts, weights = weighted_set()
    for path in (tmp_path / "sade.npz", tmp_path / "sade"):
        bd.save_predictions(path, labels, logits=logits, train_counts=counts, expert_logits=experts,
                            expert_weights=weights)
        pset = bd.load_predictions(path)
        np.testing.assert_array_equal(pset.expert_weights, weights)
        assert pset.arrays()["expert_weights"] is pset.expert_weights
    bd.save_predictions(tmp_path / "sade", labels, logits=logits, expert_logits=experts)
    assert bd.load_predictions(tmp_path / "sade").expert_weights is None  # the stale file is gone


@pytest.mark.parametrize("bad, message", [
    (lambda w: w[:, :2], "expert_weights must be (D, M) = (4, 3)"),
    (lambda w: w[0], "expert_weights must be (D, M) = (4, 3)"),
    (lambda w: w * np.array([1.0, -1.0, 1.0]) + np.array([0.0, 0.0, 2.0]) * w[:, 1:2], "finite and >= 0"),
    (lambda w: np.where(np.arange(4)[:, None] == 2, np.nan, w), "finite and >= 0"),
    (lambda w: w * 1.01, "expert_weights of model 0 sum to 1.01"),
    (lambda w: w.astype(str), "expert_weights must be (D, M)"),
])
def test_bad_expert_weights_are_refused_on_save(tmp_path, bad, message):
    labels, experts, logits, _, weights = weighted_set()
    with pytest.raises(BvkitError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        bd.save_predictions(tmp_path / "bad.npz", labels, logits=logits, expert_logits=experts,
                            expert_weights=bad(weights))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "bad.npz").exists()


def test_expert_weights_need_expert_logits(tmp_path):
    labels, _, logits, _, weights = weighted_set()
    with pytest.raises(BvkitError, match="expert_weights need expert_logits"):
        bd.save_predictions(tmp_path / "bad.npz", labels, logits=logits, expert_weights=weights)
    with pytest.raises(BvkitError, match="expert_weights need expert_logits"):
        bd.decompose(labels, logits=logits, expert_weights=weights)


def test_learned_weights_decompose_the_logits_but_not_the_experts(run_cli, tmp_path):
    labels, experts, logits, counts, weights = weighted_set()
    bd.save_predictions(tmp_path / "sade.npz", labels, logits=logits, train_counts=counts,
                        expert_logits=experts, expert_weights=weights)
    result = bd.decompose_file(tmp_path / "sade.npz", loss="all")
    assert result.experts is None and result.settings["sade"]["weighted_experts"] is True
    plain = bd.decompose(labels, logits=logits, train_counts=counts, loss="all", method="sade")
    pd.testing.assert_frame_equal(result.per_split, plain.per_split)
    code, stdout, stderr = run_cli("decompose", tmp_path / "sade.npz", "--loss", "all",
                                   "--out", tmp_path / "out")
    assert code == 0, stderr
    assert ("sade: experts combined with learned weights (expert_weights); the expert "
            "decomposition needs equal weights: skipped") in stderr
    assert not (tmp_path / "out" / "experts_per_class.csv").exists()
    assert set(pd.read_csv(tmp_path / "out" / "per_split.csv")["loss"]) == {"squared", "zero-one", "cross-entropy"}
    # the weighted sum is still checked: logits that are neither it nor the mean are refused
    with pytest.raises(BvkitError, match="not the weighted sum of its experts"):
        bd.decompose(labels, logits=experts.mean(axis=1), expert_logits=experts, expert_weights=weights)
    # the same file without its weights is refused as before
    np.savez(tmp_path / "unweighted.npz", labels=labels, logits=logits, train_counts=counts,
             expert_logits=experts)
    code, _, stderr = run_cli("decompose", tmp_path / "unweighted.npz", "--out", tmp_path / "o")
    assert code == 2 and "expert_logits do not match logits" in stderr


def test_equal_weights_are_the_plain_mean():
    labels, experts, logits, counts = experts_set(seed=21, n_samples=60)
    uniform = np.full(experts.shape[:2], 1 / 3, dtype=np.float32)
    options = dict(train_counts=counts, loss="all", expert_logits=experts, bootstrap=5)
    weighted = bd.decompose(labels, logits=logits, expert_weights=uniform, **options)
    plain = bd.decompose(labels, logits=logits, **options)
    for attr in ("per_sample", "per_class", "per_split"):
        pd.testing.assert_frame_equal(getattr(weighted.experts, attr), getattr(plain.experts, attr))
    assert weighted.settings == plain.settings
