import json

import numpy as np
import pytest
import torch
from train_helpers import TINY

from bvkit.train import train
from bvkit.train.checkpoint import load_checkpoint
from bvkit.train.decoupled import select_tau, tau_normalize


def backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


@pytest.mark.parametrize("method", ["crt", "lws", "tau-norm"])
def test_decoupled_stages_leave_the_features_bitwise_unchanged(method, stage_one_dir, tiny_data, tmp_path):
    stage_one = load_checkpoint(stage_one_dir / "checkpoint.pt")["model"]
    result = train(method, tiny_data, out=tmp_path, device="cpu", stage_one=stage_one_dir / "checkpoint.pt",
                   **{f"{method}.epochs": 2} if method != "tau-norm" else {}, **TINY)
    after = result.model.state_dict()
    before = backbone(stage_one)
    assert before and before.keys() == backbone(after).keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    losses = [row["loss"] for row in result.history if row["stage"] == method]
    if method == "tau-norm":
        assert losses == [] and 0.0 <= result.metrics["tau"] <= 1.0
        assert len(result.metrics["tau_grid"]) == 11
    else:
        assert len(losses) == 2 and all(np.isfinite(losses))
    if method == "crt":  # a freshly initialised classifier, trained
        assert not torch.equal(after["classifier.weight"], stage_one["classifier.weight"])
    if method == "lws":  # the frozen classifier kept, scales learned
        assert torch.equal(after["classifier.base.weight"], stage_one["classifier.weight"])
        assert not torch.equal(after["classifier.scales"], torch.ones_like(after["classifier.scales"]))
    assert json.loads((tmp_path / "metrics.json").read_text())["method"] == method


# The routers see logits of size ~30 and a x100 positive weight: at lr 0.01 with one large batch
# per epoch (the recipe's 512 > this tiny set) SGD oscillates, so the check uses small steps.
@pytest.mark.parametrize("method, stage, lr, batch_size",
                         [("crt", "crt", 0.01, 64), ("lws", "lws", 0.05, 64), ("ride-ea", "routing", 5e-4, 64)])
def test_second_stages_lower_their_loss(method, stage, lr, batch_size, stage_one_dir, ride_stage_one_dir, tiny_data):
    source = ride_stage_one_dir if method == "ride-ea" else stage_one_dir
    settings = {f"{stage}.epochs": 4, f"{stage}.schedule": "constant", f"{stage}.lr": lr,
                f"{stage}.batch_size": batch_size}
    result = train(method, tiny_data, device="cpu", stage_one=source / "checkpoint.pt", **settings, **TINY)
    losses = [row["loss"] for row in result.history if row["stage"] == stage]
    assert len(losses) == 4 and losses[-1] < losses[0], losses


def test_a_two_stage_method_runs_both_stages_in_one_call(tiny_data):
    result = train("crt", tiny_data, device="cpu", epochs=1, **{"crt.epochs": 1}, **TINY)
    assert [row["stage"] for row in result.history] == ["stage1", "crt"]


def test_select_tau_picks_the_best_grid_point_on_the_validation_features():
    # class 0's weight is 10x longer than class 1's: tau = 1 removes that bias and is best
    weight = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, 0.5], [0.5, 1.0], [2.0, 0.1], [0.2, 2.0]])
    labels = torch.tensor([0, 1, 0, 1])
    tau, scores = select_tau(features, labels, weight, [0.0, 0.5, 1.0], 2)
    assert tau == 1.0 and [row["val_accuracy"] for row in scores] == [0.5, 0.75, 1.0]
    np.testing.assert_allclose(tau_normalize(weight, 1.0).norm(dim=1), [1.0, 1.0])


def test_ride_ea_freezes_stage_one_and_reports_expert_usage(ride_stage_one_dir, tiny_data, tmp_path):
    stage_one = load_checkpoint(ride_stage_one_dir / "checkpoint.pt")["model"]
    result = train("ride-ea", tiny_data, out=tmp_path, device="cpu",
                   stage_one=ride_stage_one_dir / "checkpoint.pt", **{"routing.epochs": 2}, **TINY)
    after = result.model.state_dict()
    for key, value in stage_one.items():
        assert torch.equal(value, after[key]), key
    usage = result.metrics["expert_usage"]
    assert len(usage["all"]) == 3 and sum(usage["all"]) == pytest.approx(1.0)
    for split in ("many", "medium", "few"):
        assert usage[split] is None or sum(usage[split]) == pytest.approx(1.0)
    assert result.metrics["mflops"] > 0
    rows = [row for row in result.history if row["stage"] == "routing"]
    assert len(rows) == 2 and all(np.isfinite(row["loss"]) and row["accuracy"] is None for row in rows)


def test_ride_distill_trains_against_a_teacher_checkpoint(ride_stage_one_dir, tiny_data):
    result = train("ride-distill", tiny_data, device="cpu", epochs=4, teacher=str(ride_stage_one_dir / "checkpoint.pt"),
                   **{"model_kwargs.num_experts": 2, "schedule": "constant", "warmup_epochs": 0, "lr": 0.05}, **TINY)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0], losses


def test_every_stage_kind_a_recipe_may_name_has_a_stage():
    from bvkit.methods import STAGE_KINDS
    from bvkit.train.stages import STAGES

    assert STAGES.names() == sorted(STAGE_KINDS)


def test_a_procedure_name_is_registered_once():
    from bvkit.errors import BvkitError
    from bvkit.train.procedures import PROCEDURES, list_procedures, register_procedure

    assert list_procedures() == ["bbn", "lfme", "m2m", "oltr"]
    with pytest.raises(BvkitError, match="already registered"):
        register_procedure("bbn")(lambda env: None)
    register_procedure("tiny-test")(lambda env: None)
    PROCEDURES.unregister("tiny-test")


def test_a_finished_two_stage_checkpoint_kept_as_its_stage_one_alone(stage_one_dir, tiny_data, tmp_path):
    """What a study keeps of a run whose stage one others reuse: those weights alone, which are
    the plain CE run's (same seed and stage-one recipe) and serve as a stage one."""
    from bvkit.train.checkpoint import keep_stage_one_only

    train("crt", tiny_data, out=tmp_path, device="cpu", epochs=2, **{"crt.epochs": 1}, **TINY)
    path = tmp_path / "checkpoint.pt"
    full = load_checkpoint(path)
    assert full["stage"] == 1 and full["optimizer"] and "stage_one_model" in full
    size = path.stat().st_size
    keep_stage_one_only(path)
    kept = load_checkpoint(path)
    assert kept["stage"] == 0 and kept["epoch"] == kept["stage_epochs"] == 2 and path.stat().st_size < size
    assert not {"optimizer", "loss", "rng", "history", "stage_one_model"} & set(kept)
    assert kept["model"].keys() == full["stage_one_model"].keys()
    ce = load_checkpoint(stage_one_dir / "checkpoint.pt")["model"]
    for key, value in kept["model"].items():
        assert torch.equal(value, full["stage_one_model"][key]) and torch.equal(value, ce[key]), key
    from_kept = train("tau-norm", tiny_data, device="cpu", stage_one=path, **TINY)
    from_ce = train("tau-norm", tiny_data, device="cpu", stage_one=stage_one_dir / "checkpoint.pt", **TINY)
    np.testing.assert_array_equal(from_kept.logits, from_ce.logits)


def test_keeping_the_stage_one_of_a_plain_run_drops_its_training_state(stage_one_dir, tmp_path):
    import shutil

    from bvkit.train.checkpoint import keep_stage_one_only

    path = tmp_path / "checkpoint.pt"
    shutil.copy(stage_one_dir / "checkpoint.pt", path)
    full = load_checkpoint(path)
    keep_stage_one_only(path)
    kept = load_checkpoint(path)
    assert full["optimizer"] and "optimizer" not in kept and kept["recipe"] == full["recipe"]
    assert (kept["num_classes"], kept["in_channels"], kept["epoch"]) == (full["num_classes"], full["in_channels"], 2)
    assert all(torch.equal(value, full["model"][key]) for key, value in kept["model"].items())
