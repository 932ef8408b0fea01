import dataclasses
import json

import numpy as np
import pytest
import torch
from interrupts import interrupt_after_checkpoint
from train_helpers import TINY

from bvkit.train import train, validation_split
from bvkit.train.checkpoint import load_checkpoint

CONSTANT_LR = {"schedule": "constant", "warmup_epochs": 0, "lr": 0.05}
SINGLE_STAGE = ["ce", "focal", "cb-focal", "ldam", "ldam-drw", "balanced-softmax", "ride"]


@pytest.mark.parametrize("method", SINGLE_STAGE)
def test_each_method_lowers_its_training_loss(method, tiny_data):
    # 5 epochs; DRW / RIDE's temperature switch (scaled: epoch 4 of 5) changes the loss itself,
    # so compare the first epoch with the last one before the switch.
    result = train(method, tiny_data, device="cpu", epochs=5, **TINY, **CONSTANT_LR)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert losses[3] < losses[0], losses


def test_metrics_outputs_and_prediction_file(stage_one_dir, tiny_data):
    metrics = json.loads((stage_one_dir / "metrics.json").read_text())
    for key in ("method", "dataset", "seed", "epochs", "accuracy", "mflops", "seconds"):
        assert key in metrics
    assert metrics["method"] == "ce" and metrics["epochs"] == 2 and metrics["mflops"] > 0
    assert set(metrics["accuracy"]) == {"all", "many", "medium", "few"}
    with np.load(stage_one_dir / "predictions.npz") as npz:
        n_test, n_classes = len(tiny_data.test.labels), len(tiny_data.class_names)
        assert npz["logits"].shape == (1, n_test, n_classes)
        np.testing.assert_array_equal(npz["labels"], tiny_data.test.labels)
        np.testing.assert_array_equal(npz["train_counts"], tiny_data.counts)
        assert list(npz["class_names"]) == list(tiny_data.class_names)
        hits = npz["logits"][0].argmax(1) == npz["labels"]
        by_class = np.array([hits[npz["labels"] == c].mean() for c in range(n_classes)])
    # metrics.json's accuracy is the prediction file's, by the documented rule: the mean of the
    # classes' accuracies, a split's over its classes (60 .. 6 training images: classes 0-4 have
    # 20 .. 100, medium; 5-9 fewer than 20, few; none more than 100, many)
    np.testing.assert_array_equal(tiny_data.counts >= 20, np.arange(n_classes) < 5)
    assert metrics["accuracy"]["all"] == pytest.approx(by_class.mean(), abs=1e-12)
    assert metrics["accuracy"]["medium"] == pytest.approx(by_class[:5].mean(), abs=1e-12)
    assert metrics["accuracy"]["few"] == pytest.approx(by_class[5:].mean(), abs=1e-12)
    assert metrics["accuracy"]["many"] is None
    assert load_checkpoint(stage_one_dir / "checkpoint.pt")["epoch"] == 2


def test_validation_split_is_disjoint_from_training_and_falls_back_to_the_lt_set(tiny_data):
    train_idx, val_idx = validation_split(tiny_data, per_class=5, seed=0)
    assert not set(train_idx) & set(val_idx)
    assert len(val_idx) > 0

    # a pool that is exactly the long-tailed set: no held-out image exists
    no_spare = dataclasses.replace(tiny_data, pool=tiny_data.train,
                                   train_indices=np.arange(len(tiny_data.train_indices)))
    train_idx, val_idx = validation_split(no_spare, per_class=5, seed=0)
    assert not set(train_idx) & set(val_idx) and len(train_idx) + len(val_idx) == len(no_spare.train_indices)
    val_counts = np.bincount(no_spare.pool.labels[val_idx], minlength=10)
    assert val_counts.max() <= 5 and (val_counts <= tiny_data.counts // 5).all() and val_counts[0] == 5


@pytest.mark.parametrize("method, overrides", [("ce", {}), ("crt", {"crt.epochs": 2})])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(method, overrides, tiny_data, tmp_path, monkeypatch):
    epochs = {"epochs": 2, **TINY, **overrides}
    straight = train(method, tiny_data, out=tmp_path / "straight", device="cpu", seed=3, **epochs)

    stop_epoch = 1 if method == "ce" else 3  # crt: stop inside the second stage
    interrupt_after_checkpoint(monkeypatch, lambda: train(method, tiny_data, out=tmp_path / "resumed", device="cpu",
                                                          seed=3, **epochs),
                               stop=lambda content, count: count == stop_epoch)
    resumed = train(method, tiny_data, out=tmp_path / "resumed", device="cpu", seed=3, **epochs)

    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    np.testing.assert_array_equal(straight.logits, resumed.logits)
    assert straight.metrics["accuracy"] == resumed.metrics["accuracy"]
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]


def test_same_seed_same_run_other_seed_other_run(tiny_data):
    a = train("ce", tiny_data, device="cpu", epochs=1, seed=1, **TINY)
    b = train("ce", tiny_data, device="cpu", epochs=1, seed=1, **TINY)
    c = train("ce", tiny_data, device="cpu", epochs=1, seed=2, **TINY)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.array_equal(a.logits, c.logits)


def test_a_different_run_in_the_same_out_dir_is_refused(stage_one_dir, tiny_data):
    from bvkit.errors import BvkitError

    with pytest.raises(BvkitError, match="different run"):
        train("ce", tiny_data, out=stage_one_dir, device="cpu", epochs=3, **TINY)


def test_progress_bar_shows_loss_accuracy_lr_and_speed_when_enabled(tiny_data, capsys):
    train("ce", tiny_data, device="cpu", epochs=1, progress=True, **TINY)
    err = capsys.readouterr().err
    for field in ("stage1 1/1", "loss=", "acc=", "lr=", "img_s="):
        assert field in err
    train("ce", tiny_data, device="cpu", epochs=1, progress=False, **TINY)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("experts, loss_kwargs", [(2, {"base": "ce"}), (4, {"base": "focal", "diversity": "pairwise"})])
def test_ride_takes_any_base_loss_expert_count_and_diversity_form(experts, loss_kwargs, tiny_data):
    result = train("ride", tiny_data, device="cpu", epochs=4, drw_epoch=None, loss_kwargs=loss_kwargs,
                   **{"model_kwargs.num_experts": experts}, **TINY, **CONSTANT_LR)
    assert result.model.num_experts == experts
    assert result.model.forward_experts(torch.zeros(2, 3, 32, 32))["expert_logits"].shape[0] == experts
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0], losses


def test_metrics_name_the_final_training_accuracy_of_the_last_stage(stage_one_dir, ride_stage_one_dir, tiny_data):
    import pandas as pd

    metrics = json.loads((stage_one_dir / "metrics.json").read_text())
    history = pd.read_csv(stage_one_dir / "history.csv")
    assert metrics["train_accuracy"] == pytest.approx(history["accuracy"].iloc[-1])
    crt = train("crt", tiny_data, device="cpu", epochs=1, **{"crt.epochs": 2}, **TINY)
    assert [row["stage"] for row in crt.history] == ["stage1", "crt", "crt"]
    assert crt.metrics["train_accuracy"] == crt.history[-1]["accuracy"] != crt.history[0]["accuracy"]
    tau = train("tau-norm", tiny_data, device="cpu", epochs=1, **TINY)
    assert tau.history[-1]["stage"] == "stage1" and tau.metrics["train_accuracy"] is None  # tau-norm trains no epoch
    routed = train("ride-ea", tiny_data, device="cpu", stage_one=ride_stage_one_dir / "checkpoint.pt",
                   **{"routing.epochs": 1}, **TINY)
    assert routed.metrics["train_accuracy"] is None  # the routers' loop counts no accuracy
    assert tau.metrics["epochs"] == 1 and routed.metrics["epochs"] == 2  # stage one's: ride_stage_one_dir's 2
