"""The strong simple baselines since RIDE (issue 27): logit adjustment (loss and post-hoc),
weight balancing (MaxNorm) and SADE (three expert losses, test-time aggregation)."""

import json
import math

import numpy as np
import pytest
import torch
from train_helpers import TINY

from bvkit.cli import main
from bvkit.errors import BvkitError
from bvkit.losses import create_loss, inverse_prior
from bvkit.methods import create_method
from bvkit.train import train
from bvkit.train.checkpoint import load_checkpoint
from bvkit.train.decoupled import MaxNormSGD, max_norm_bound, select_adjustment_tau


def ce(logits, target):
    """-log softmax(logits)[target] by hand, in float64 Python."""
    return -(logits[target] - math.log(sum(math.exp(z) for z in logits)))


# ---------------------------------------------------------------- losses by hand


def test_logit_adjusted_loss_is_ce_on_logits_plus_tau_log_prior():
    counts, logits, targets = [3, 1], [[1.0, 0.0], [0.5, 2.0]], [1, 0]
    prior = [0.75, 0.25]
    for tau in (1.0, 2.5, 0.0):
        expected = np.mean([ce([z + tau * math.log(p) for z, p in zip(row, prior)], y)
                            for row, y in zip(logits, targets)])
        loss = create_loss("logit-adjustment", counts, tau=tau)(torch.tensor(logits), torch.tensor(targets))
        assert float(loss) == pytest.approx(expected, rel=1e-6)
    # tau = 1: e.g. the first sample's loss is -log(0.25 / (0.75 e + 0.25))
    first = create_loss("logit-adjustment", counts, tau=1.0)(torch.tensor(logits[:1]), torch.tensor(targets[:1]))
    assert float(first) == pytest.approx(-math.log(0.25 / (0.75 * math.e + 0.25)), rel=1e-6)
    with pytest.raises(BvkitError, match="tau >= 0"):
        create_loss("logit-adjustment", counts, tau=-0.5)


def test_inverse_prior_hands_the_sorted_prior_out_in_reverse():
    np.testing.assert_allclose(inverse_prior([6, 3, 1]), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(inverse_prior([1, 6, 3]), [0.6, 0.1, 0.3])


def test_sade_loss_is_the_sum_of_the_three_expert_losses():
    counts, tau = [6, 3, 1], 2.0
    prior, inverse = [0.6, 0.3, 0.1], [0.1, 0.3, 0.6]
    experts = [[[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]],
               [[-0.5, 1.5, 0.0], [1.0, -2.0, 0.5]],
               [[0.3, 0.3, -1.0], [2.0, 1.0, 0.0]]]
    targets = [0, 2]
    shifts = [[0.0] * 3, [math.log(p) for p in prior],
              [math.log(p) - tau * math.log(q) for p, q in zip(prior, inverse)]]
    expected = sum(np.mean([ce([z + s for z, s in zip(row, shifts[e])], y) for row, y in zip(experts[e], targets)])
                   for e in range(3))
    loss = create_loss("sade", counts, tau=tau)({"expert_logits": torch.tensor(experts)}, torch.tensor(targets))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(BvkitError, match="3 experts"):
        create_loss("sade", counts)({"expert_logits": torch.zeros(2, 2, 3)}, torch.tensor(targets))


# ---------------------------------------------------------------- the recipes


def test_logit_adjust_posthoc_trains_exactly_the_ce_stage_one():
    from bvkit.study.planning import stage_one_recipe

    assert stage_one_recipe(create_method("logit-adjust-posthoc")) == stage_one_recipe(create_method("ce"))
    assert stage_one_recipe(create_method("logit-adjust-posthoc", epochs=7)) == stage_one_recipe(create_method("ce", epochs=7))
    la = create_method("logit-adjust")
    assert (la.loss, la.loss_kwargs) == ("logit-adjustment", {"tau": 1.0})
    assert {k: v for k, v in la.to_dict().items() if k not in ("name", "description", "loss", "loss_kwargs")} == \
        {k: v for k, v in create_method("ce").to_dict().items() if k not in ("name", "description", "loss", "loss_kwargs")}


def test_weight_balancing_and_sade_recipes_as_published():
    wb = create_method("weight-balancing")
    assert (wb.model, wb.weight_decay, wb.lr, wb.batch_size, wb.schedule, wb.warmup_epochs, wb.nesterov) == (
        "resnet32", 5e-3, 0.01, 64, "cosine", 0, False)
    stage = wb.stages[0]
    assert (stage.kind, stage.epochs, stage.lr, stage.weight_decay, stage.batch_size, stage.balanced) == (
        "maxnorm", 10, 0.01, 0.1, 64, False)
    assert stage.options == {"thresh": 0.1, "beta": 0.9999}
    published = create_method("weight-balancing", model="resnet34-cifar", epochs=320)
    assert (published.model, published.epochs) == ("resnet34-cifar", 320)
    sade = create_method("sade")
    assert (sade.model, sade.model_kwargs["num_experts"], sade.loss_kwargs, sade.lr_factors, sade.nesterov) == (
        "sade-resnet32", 3, {"tau": 2.0}, (0.1, 0.01), True)
    assert sade.stages[0].kind == "sade-tta" and sade.stages[0].epochs == 5


def test_resnet34_cifar_is_the_weight_balancing_papers_backbone():
    from bvkit.models import count_flops, create_model

    model = create_model("resnet34-cifar", 10)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_flops("resnet34-cifar", n_classes=100)["params"] == pytest.approx(21.3e6, rel=0.01)


# ---------------------------------------------------------------- post-hoc logit adjustment


def test_select_adjustment_tau_picks_the_best_grid_point():
    log_prior = torch.log(torch.tensor([0.9, 0.1]))
    logits = torch.tensor([[2.5, 0.0], [1.0, 0.5], [0.5, 0.0], [3.0, 0.0]])  # a head-biased model
    labels = torch.tensor([0, 1, 1, 0])
    tau, scores = select_adjustment_tau(logits, labels, log_prior, [0.0, 2.0, 1.0], 2)
    # class 1 gains tau * log(0.9 / 0.1) = tau * 2.197 over class 0. tau 0: class 1 never predicted
    # (mean per-class accuracy 0.5); tau 1: samples 1 and 2 go to class 1, samples 0 and 3 stay (1.0);
    # tau 2 (4.394): every sample goes to class 1 (0.5)
    assert [row["val_accuracy"] for row in scores] == [0.5, 0.5, 1.0] and tau == 1.0


def test_posthoc_adjustment_with_tau_zero_is_ce(stage_one_dir, tiny_data):
    with np.load(stage_one_dir / "predictions.npz") as npz:
        ce_logits = npz["logits"][0]
    checkpoint = stage_one_dir / "checkpoint.pt"
    zero = train("logit-adjust-posthoc", tiny_data, device="cpu", stage_one=checkpoint,
                 **{"posthoc-adjust.options.tau_grid": [0.0]}, **TINY)
    assert zero.metrics["tau"] == 0.0
    np.testing.assert_array_equal(zero.logits, ce_logits)
    one = train("logit-adjust-posthoc", tiny_data, device="cpu", stage_one=checkpoint,
                **{"posthoc-adjust.options.tau_grid": [1.0]}, **TINY)
    counts = np.bincount(tiny_data.pool.labels[tiny_data.train_indices], minlength=10).astype(float)
    assert one.metrics["tau"] == 1.0 and not np.array_equal(one.logits, ce_logits)
    # within the run the prior is of the images trained on (the validation split carved out): a
    # constant per class, so the difference is one row repeated, and larger for rarer classes
    offset = ce_logits - one.logits
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-5)
    assert np.exp(offset[0]).sum() == pytest.approx(1.0, rel=1e-4)  # tau = 1: the log prior itself
    assert np.corrcoef(offset[0], np.log(counts))[0, 1] > 0.99
    picked = train("logit-adjust-posthoc", tiny_data, device="cpu", stage_one=checkpoint, **TINY)
    assert len(picked.metrics["tau_grid"]) == 21 and picked.metrics["tau"] in [row["tau"] for row in picked.metrics["tau_grid"]]


# ---------------------------------------------------------------- weight balancing: MaxNorm


def test_maxnorm_sgd_projects_every_class_row_after_a_step():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    with torch.no_grad():
        head.weight[0].mul_(50)  # one row far beyond the bound
    bound = max_norm_bound(head.weight, 0.1)
    norms = head.weight.detach().norm(dim=1)
    assert bound == pytest.approx(float(norms.min() + 0.1 * (norms.max() - norms.min())))
    optimizer = MaxNormSGD(head.parameters(), head.weight, bound, lr=0.1, momentum=0.9, weight_decay=0.1)
    loss = torch.nn.functional.cross_entropy(head(torch.randn(8, 4)), torch.randint(0, 3, (8,)))
    loss.backward()
    optimizer.step()
    after = head.weight.detach().norm(dim=1)
    assert float(after.max()) <= bound * (1 + 1e-6)
    assert float(after[0]) == pytest.approx(bound, rel=1e-6)  # projected onto the ball, not shrunk further
    with pytest.raises(BvkitError, match="bound must be > 0"):
        MaxNormSGD(head.parameters(), head.weight, 0.0, lr=0.1)


def test_weight_balancing_stage_keeps_the_classifier_within_its_bound(stage_one_dir, tiny_data):
    stage_one = load_checkpoint(stage_one_dir / "checkpoint.pt")["model"]
    result = train("weight-balancing", tiny_data, device="cpu", stage_one=stage_one_dir / "checkpoint.pt",
                   **{"maxnorm.epochs": 2}, **TINY)
    bound = result.metrics["max_norm"]
    before = stage_one["classifier.weight"].norm(dim=1)
    assert bound == pytest.approx(float(before.min() + 0.1 * (before.max() - before.min())), rel=1e-6)
    assert float(before.max()) > bound  # the constraint binds
    after = result.model.state_dict()
    assert float(after["classifier.weight"].norm(dim=1).max()) <= bound * (1 + 1e-5)
    for key, value in stage_one.items():  # the backbone untouched
        if not key.startswith("classifier."):
            assert torch.equal(value, after[key]), key
    assert [row["stage"] for row in result.history] == ["maxnorm", "maxnorm"]
    fixed = train("weight-balancing", tiny_data, device="cpu", stage_one=stage_one_dir / "checkpoint.pt",
                  **{"maxnorm.epochs": 1, "maxnorm.options.max_norm": 0.05}, **TINY)
    assert fixed.metrics["max_norm"] == 0.05
    norms = fixed.model.classifier.weight.norm(dim=1).detach().numpy()
    assert norms.max() <= 0.05 * (1 + 1e-5) and norms.max() == pytest.approx(0.05, rel=1e-4)


# ---------------------------------------------------------------- SADE


@pytest.fixture(scope="module")
def sade_stage_one(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("sade")
    train("sade", tiny_data, out=out, device="cpu", epochs=2, **{"sade-tta.epochs": 0}, **TINY)
    return out / "checkpoint.pt"


def test_sade_writes_expert_logits_and_aggregates_them_with_learned_convex_weights(sade_stage_one, tiny_data,
                                                                                     tmp_path):
    result = train("sade", tiny_data, out=tmp_path, device="cpu", stage_one=sade_stage_one,
                   **{"sade-tta.epochs": 2, "sade-tta.options.min_weight": 0.0}, **TINY)
    weights = np.asarray(result.metrics["expert_weights"])
    assert weights.shape == (3,) and (weights >= 0).all() and weights.sum() == pytest.approx(1.0, abs=1e-6)
    assert not np.allclose(weights, 1 / 3, atol=1e-3)  # learned, not left uniform
    assert result.metrics["tta_epochs"] == 2
    rows = [row for row in result.history if row["stage"] == "sade-tta"]
    assert len(rows) == 2 and all(-1.0 <= row["loss"] <= 0.0 for row in rows)
    with np.load(tmp_path / "predictions.npz") as npz:
        experts, logits = npz["expert_logits"][0], npz["logits"][0]
    assert experts.shape == (3, *logits.shape)
    np.testing.assert_allclose(np.einsum("e,enc->nc", weights, experts), logits, rtol=1e-4, atol=1e-4)
    assert torch.allclose(result.model.expert_weights, torch.tensor(weights, dtype=torch.float32))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["expert_weights"] == result.metrics["expert_weights"]
    # the stage's weights are kept: a rerun in the same directory resumes them without learning again
    again = train("sade", tiny_data, out=tmp_path, device="cpu", stage_one=sade_stage_one,
                  **{"sade-tta.epochs": 2, "sade-tta.options.min_weight": 0.0}, **TINY)
    assert again.metrics["expert_weights"] == result.metrics["expert_weights"]


def test_sade_test_time_stage_never_reads_the_test_labels(sade_stage_one, tiny_data, monkeypatch):
    from bvkit.train import run as run_module

    settings = {"sade-tta.epochs": 2, "sade-tta.options.min_weight": 0.0}
    clean = train("sade", tiny_data, device="cpu", stage_one=sade_stage_one, **settings, **TINY)
    prepare = run_module.prepare_data
    poisoned_labels = []

    def poisoning(*args, **kwargs):
        data = prepare(*args, **kwargs)
        y = data.test_set.y
        data.test_set.y = (y + 1 + torch.randint(0, 9, y.shape, generator=torch.Generator().manual_seed(1))) % 10
        assert bool((data.test_set.y != y).all())
        poisoned_labels.append(data.test_set.y)
        return data

    monkeypatch.setattr(run_module, "prepare_data", poisoning)
    poisoned = train("sade", tiny_data, device="cpu", stage_one=sade_stage_one, **settings, **TINY)
    assert poisoned_labels and poisoned.metrics["expert_weights"] == clean.metrics["expert_weights"]
    np.testing.assert_array_equal(poisoned.logits, clean.logits)  # same weights, same predictions
    assert poisoned.metrics["accuracy"]["all"] != clean.metrics["accuracy"]["all"]  # the labels were poisoned


def test_sade_stops_once_a_weight_falls_under_min_weight(sade_stage_one, tiny_data):
    result = train("sade", tiny_data, device="cpu", stage_one=sade_stage_one,
                   **{"sade-tta.epochs": 5, "sade-tta.options.min_weight": 0.999, "sade-tta.lr": 0.5}, **TINY)
    assert result.metrics["tta_epochs"] == 1  # every weight is under 0.999 after the first epoch


# ---------------------------------------------------------------- bad overrides: one line, exit 2

TINY_ARGS = ["--dataset", "synthetic-lt", "--imbalance", "10", "--n-max", "40", "--model-width", "4",
             "--set", "model_kwargs.blocks=1", "--set", "val_per_class=5", "--device", "cpu"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "logit-adjust", "--set", "loss_kwargs.tau=-1"], "loss_kwargs.tau must be a number >= 0, got -1"),
        (["--method", "logit-adjust-posthoc", "--set", "posthoc-adjust.options.tau_grid=[1, -0.5]"],
         "posthoc-adjust.options.tau_grid must be a non-empty list of numbers >= 0"),
        (["--method", "weight-balancing", "--set", "maxnorm.options.max_norm=0"],
         "maxnorm.options.max_norm must be a number > 0 or none, got 0"),
        (["--method", "weight-balancing", "--set", "maxnorm.options.max_norm=-2.5"], "must be a number > 0"),
        (["--method", "weight-balancing", "--set", "maxnorm.options.thresh=-0.1"],
         "maxnorm.options.thresh must be a number >= 0"),
        (["--method", "weight-balancing", "--set", "maxnorm.options.bound=1"], "unknown setting maxnorm.options.bound"),
        (["--method", "sade", "--set", "loss_kwargs.tau=-2"], "loss_kwargs.tau must be a number >= 0"),
        (["--method", "sade", "--set", "sade-tta.options.min_weight=1.5"], "sade-tta.options.min_weight must be"),
        (["--method", "sade", "--experts", "2"], "exactly 3 experts"),
    ],
)
def test_bad_overrides_are_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    code = main(["train", *TINY_ARGS, "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before anything ran
