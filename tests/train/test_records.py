"""What a run records beside its result, for reporting only: the test set along stage one
(history's test_accuracy, snapshots.npz), a multi-expert model's experts' test logits, and the
validation set checked against further unused pool images (heldout.npz, metrics' val_check)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from train_helpers import TINY

from bvkit.train import train
from bvkit.train.evaluation import append_snapshot, check_statistic, first_drop_epoch, snapshot_every
from bvkit.train.schedule import Schedule, ride_schedule


@pytest.fixture(scope="module")
def ride_run(tmp_path_factory, tiny_data):
    """A 10-epoch RIDE-2 run: lr drops after epochs 8 and 9 (the 200-epoch milestones scaled)."""
    out = tmp_path_factory.mktemp("ride-records")
    result = train("ride", tiny_data, out=out, device="cpu", epochs=10, **TINY, **{"model_kwargs.num_experts": 2})
    return out, result


def test_the_test_set_is_scored_from_the_first_lr_drop_and_snapshotted_every_tenth(ride_run):
    out, result = ride_run
    history = pd.read_csv(out / "history.csv")
    scored = history.loc[history["test_accuracy"].notna(), "epoch"].tolist()
    assert scored == [8, 9, 10]  # the last epoch at lr 0.1 (the baseline), then the two lower lrs
    assert history.loc[history["epoch"] == 9, "lr"].item() == pytest.approx(0.001)
    # the last epoch's score is the run's final test accuracy (the same model, the same images)
    assert history["test_accuracy"].iloc[-1] == pytest.approx(result.metrics["accuracy"]["all"])
    with np.load(out / "snapshots.npz") as snaps:
        assert snaps["epochs"].tolist() == list(range(1, 11))  # 10 epochs: every epoch is a tenth
        assert snaps["logits"].dtype == np.float16 and snaps["logits"].shape == (10, *result.logits.shape)
        assert snaps["expert_logits"].shape == (10, 2, *result.logits.shape)
        np.testing.assert_array_equal(snaps["labels"], result.labels)
        # the last snapshot is the final model's logits, and each snapshot's experts average to it
        np.testing.assert_allclose(snaps["logits"][-1], result.logits, atol=0.02)
        np.testing.assert_allclose(snaps["expert_logits"].astype(float).mean(1), snaps["logits"], atol=0.02)
        assert not np.allclose(snaps["logits"][0], snaps["logits"][-1], atol=0.1)  # it moved along training
        assert snaps["accuracy_epochs"].tolist() == [8, 9, 10]
        np.testing.assert_allclose(np.nanmean(snaps["class_accuracy"], axis=1),
                                   history.loc[history["epoch"] >= 8, "test_accuracy"])


def test_a_multi_expert_run_writes_its_experts_test_logits(ride_run, tiny_data):
    out, result = ride_run
    with np.load(out / "predictions.npz") as preds:
        experts = preds["expert_logits"]
        assert experts.shape == (1, 2, *result.logits.shape)
        # RIDE's output is the mean of its experts' logits, and the experts differ
        np.testing.assert_allclose(experts[0].mean(0), preds["logits"][0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(experts[0, 0], experts[0, 1])
    expert = result.model.eval().forward_experts(torch.zeros(2, 3, 32, 32))["expert_logits"]
    assert expert.shape[0] == 2


def test_watching_the_test_set_changes_nothing_the_run_computes(tmp_path, tiny_data, monkeypatch):
    """The same run with the test watch switched off gives the same training curve and the
    same test logits: the watch only reads."""
    from bvkit.train import run as run_module

    settings = dict(device="cpu", epochs=3, resume=False, **TINY)
    watched = train("ce", tiny_data, out=tmp_path / "watched", **settings)
    monkeypatch.setattr(run_module, "TestWatch", lambda *args, **kwargs: None)
    unwatched = train("ce", tiny_data, out=tmp_path / "plain", **settings)
    np.testing.assert_array_equal(watched.logits, unwatched.logits)
    assert [row["loss"] for row in watched.history] == [row["loss"] for row in unwatched.history]
    assert (tmp_path / "watched" / "snapshots.npz").is_file()
    assert not (tmp_path / "plain" / "snapshots.npz").exists()
    assert "expert_logits" not in np.load(tmp_path / "watched" / "predictions.npz").files  # one model


def test_the_validation_set_is_checked_against_unused_pool_images(ride_run, tiny_data):
    out, result = ride_run
    check = json.loads((out / "metrics.json").read_text())["val_check"]
    with np.load(out / "heldout.npz") as held:
        val, other = held["val_indices"], held["check_indices"]
        train_idx = tiny_data.train_indices
        # disjoint draws from the pool, outside the training images
        assert not set(val) & set(other) and not set(other) & set(train_idx)
        labels = np.asarray(tiny_data.pool.labels)
        np.testing.assert_array_equal(held["check_labels"], labels[other])
        assert check["n_check"] == len(other) and check["n_val"] == int(np.isin(held["val_labels"],
                                                                               held["check_labels"]).sum())
        # the numbers are the two sets' mean per-class accuracies over the classes both have
        shared = np.intersect1d(held["val_labels"], held["check_labels"])
        for name in ("val", "check"):
            hits = held[f"{name}_logits"].argmax(1) == held[f"{name}_labels"]
            per_class = [hits[held[f"{name}_labels"] == c].mean() for c in shared]
            assert check[f"{name}_accuracy"] == pytest.approx(np.mean(per_class))
    assert abs(check["z"]) < 3  # an honest draw behaves like the pool


def test_check_statistic_flags_a_validation_set_that_is_easier_than_the_pool():
    """Per-class counts of an honest draw give |z| < 3; a validation set the model has seen
    (every image right, the pool's images right 70 % of the time) gives z far above."""
    rng = np.random.default_rng(0)
    totals_val, totals_check = np.full(9, 50), np.full(9, 500)
    honest = check_statistic(rng.binomial(50, 0.7, 9), totals_val, rng.binomial(500, 0.7, 9), totals_check)
    assert abs(honest["z"]) < 3 and honest["classes"] == 9
    leaked = check_statistic(totals_val, totals_val, rng.binomial(500, 0.7, 9), totals_check)
    assert leaked["z"] > 10 and leaked["difference"] == pytest.approx(1 - leaked["check_accuracy"])
    # classes without check images (the head class, whose pool is all trained on) are left out
    partial = check_statistic([50, 35], [50, 50], [0, 350], [0, 500])
    assert partial["classes"] == 1 and partial["val_accuracy"] == 0.7 and partial["z"] == 0
    # z is calibrated: over many honest draws about 5 % fall outside +-1.96
    zs = [check_statistic(rng.binomial(50, 0.6, 9), totals_val, rng.binomial(500, 0.6, 9), totals_check)["z"]
          for _ in range(2000)]
    assert 0.03 < np.mean(np.abs(zs) > 1.96) < 0.07


def test_snapshot_rows_of_a_retrained_epoch_replace_the_old_ones(tmp_path):
    path = tmp_path / "snapshots.npz"
    labels = np.arange(3)
    for epoch, value in ((2, 1.0), (4, 2.0), (4, 3.0)):  # epoch 4 trained again after a resume
        append_snapshot(path, {"labels": labels, "epochs": np.array([epoch]),
                               "logits": np.full((1, 3, 2), value, np.float16)})
    append_snapshot(path, {"labels": labels, "accuracy_epochs": np.array([4]),
                           "class_accuracy": np.ones((1, 2), np.float32)})
    with np.load(path) as snaps:
        assert snaps["epochs"].tolist() == [2, 4] and snaps["logits"][:, 0, 0].tolist() == [1.0, 3.0]
        assert snaps["accuracy_epochs"].tolist() == [4] and snaps["class_accuracy"].shape == (1, 2)


def test_the_watch_starts_at_the_first_lr_step_or_the_last_fifth():
    assert first_drop_epoch(ride_schedule(200, 10)) == 160
    assert first_drop_epoch(ride_schedule(40, 10)) == 32
    assert first_drop_epoch(Schedule("cosine", 100, 10)) == 80
    assert snapshot_every(200) == 20 and snapshot_every(40) == 4 and snapshot_every(5) == 1


def test_sade_writes_its_learned_expert_weights_beside_its_experts(tmp_path, tiny_data):
    from bvkit.train.evaluation import expert_weights_of

    result = train("sade", tiny_data, out=tmp_path, device="cpu", epochs=2, **TINY,
                   **{"sade-tta.epochs": 2, "sade-tta.options.min_weight": 0.0})
    buffer = result.model.expert_weights.detach().numpy()
    assert not np.allclose(buffer, 1 / 3, atol=1e-3)  # learned by the test-time stage
    with np.load(tmp_path / "predictions.npz") as preds:
        weights, experts, logits = preds["expert_weights"], preds["expert_logits"], preds["logits"]
    assert weights.shape == (1, 3) and experts.shape == (1, 3, *logits.shape[1:])
    np.testing.assert_array_equal(weights[0], buffer)
    np.testing.assert_allclose(np.einsum("dm,dmnc->dnc", weights, experts), logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(expert_weights_of(result.model), buffer)


def test_a_model_without_expert_weights_writes_none(ride_run):
    from bvkit.train.evaluation import expert_weights_of

    out, result = ride_run
    assert expert_weights_of(result.model) is None
    with np.load(out / "predictions.npz") as preds:
        assert "expert_weights" not in preds.files
