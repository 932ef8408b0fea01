import itertools
import json

import numpy as np
import pytest
import torch
from analytic_flops import bbn_extra_macs, resnet32_macs
from interrupts import interrupt_after_checkpoint
from train_helpers import TINY

from bvkit.data import epoch_generator, normalize
from bvkit.errors import BvkitError
from bvkit.methods import create_method
from bvkit.models import count_flops, create_model
from bvkit.train import train
from bvkit.train.checkpoint import load_checkpoint
from bvkit.train.procedures import bbn as bbn_module
from bvkit.train.procedures.bbn import (
    BilateralLoader,
    CumulativeLoss,
    cumulative_alpha,
    reversed_indices,
)

CONSTANT_LR = {"schedule": "constant", "warmup_epochs": 0, "lr": 0.05}


@pytest.fixture(scope="module")
def bbn_run_dir(tmp_path_factory, tiny_data):
    """A finished 2-epoch BBN run (seed 3), shared by the output and resume tests."""
    out = tmp_path_factory.mktemp("bbn")
    result = train("bbn", tiny_data, out=out, device="cpu", seed=3, epochs=2, **TINY)
    return out, result


def test_registered_recipe_is_bbns_cifar_config():
    recipe = create_method("bbn")
    assert (recipe.model, recipe.procedure, recipe.epochs, recipe.batch_size, recipe.lr) == (
        "bbn-resnet32", "bbn", 200, 128, 0.1)
    assert (recipe.momentum, recipe.nesterov, recipe.weight_decay, recipe.warmup_epochs) == (0.9, True, 2e-4, 5)
    assert (recipe.lr_milestones, recipe.lr_factors, recipe.drw_epoch) == ((119, 159), (0.01, 0.0001), None)
    assert recipe.augment == {"crop_padding": 4, "flip": True, "rotation": 0.0}


def test_a_model_without_branches_is_a_bvkit_error(tiny_data):
    with pytest.raises(BvkitError, match="bilateral-branch model"):
        train("bbn", tiny_data, device="cpu", epochs=1, model="resnet32", **TINY)


def test_cumulative_alpha_falls_parabolically_from_one():
    alphas = [cumulative_alpha(epoch, 200) for epoch in range(200)]
    assert alphas[0] == 1.0 and alphas[100] == 0.75
    assert alphas[-1] == pytest.approx(1 - (199 / 200) ** 2) and alphas[-1] > 0
    assert all(a > b for a, b in itertools.pairwise(alphas))
    loss = CumulativeLoss(epochs=4)
    loss.set_epoch(2)
    assert loss.alpha.item() == 0.75


def test_cumulative_loss_weights_the_two_halves_targets():
    logits = torch.randn(6, 5)
    y_c, y_r = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 4, 3, 3, 2, 1])
    loss = CumulativeLoss(epochs=4)
    loss.set_epoch(2)
    ce = torch.nn.functional.cross_entropy
    expected = 0.75 * ce(logits, y_c) + 0.25 * ce(logits, y_r)
    torch.testing.assert_close(loss({"logits": logits}, torch.cat([y_c, y_r])), expected)


def test_reversed_sampler_draws_classes_in_proportion_to_nmax_over_n():
    counts = np.array([200, 100, 20, 10])
    labels = torch.from_numpy(np.repeat(np.arange(4), counts))
    draw = reversed_indices(labels, 200_000, epoch_generator(0, 0))
    assert draw.min() >= 0 and draw.max() < len(labels)
    freq = np.bincount(labels[draw].numpy(), minlength=4) / len(draw)
    expected = (counts.max() / counts) / (counts.max() / counts).sum()
    np.testing.assert_allclose(freq, expected, atol=0.005)
    # within a class, images are picked uniformly
    rarest = np.bincount(draw[labels[draw] == 3].numpy(), minlength=len(labels))[-10:]
    assert rarest.min() > 0.8 * rarest.mean()
    assert torch.equal(draw, reversed_indices(labels, 200_000, epoch_generator(0, 0)))
    assert not torch.equal(draw, reversed_indices(labels, 200_000, epoch_generator(1, 0)))


def test_bilateral_loader_pairs_a_uniform_epoch_with_reversed_draws_of_equal_size():
    y = torch.from_numpy(np.repeat(np.arange(3), [40, 15, 5]))
    def image_of(labels):  # every pixel is the label
        return labels.view(-1, 1, 1, 1).to(torch.uint8).expand(-1, 3, 4, 4)

    loader = BilateralLoader(image_of(y).contiguous(), y, batch_size=16, augment=None, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 4  # 60 images: 16 16 16 12
    uniform = []
    for inputs, targets in batches:
        half = len(targets) // 2
        assert inputs.shape == (2 * half, 3, 4, 4)
        assert torch.equal(inputs, normalize(image_of(targets)))  # each target is its image's label
        uniform.append(targets[:half])
    assert [len(t) // 2 for _, t in batches] == [16, 16, 16, 12]
    np.testing.assert_array_equal(np.bincount(torch.cat(uniform).numpy()), [40, 15, 5])  # each image once

    reversed_labels = []
    for epoch in range(40):
        loader.set_epoch(epoch)
        reversed_labels += [targets[len(targets) // 2:] for _, targets in loader]
    freq = np.bincount(torch.cat(reversed_labels).numpy()) / (40 * 60)
    np.testing.assert_allclose(freq, np.array([1, 40 / 15, 8]) / (1 + 40 / 15 + 8), atol=0.03)

    loader.set_epoch(0)
    again = list(loader)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    loader.set_epoch(1)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, loader))


def _branch_features(model, x):
    h = model.trunk(x)
    return model.branch_features(h, model.conventional), model.branch_features(h, model.rebalancing)


def test_eval_forward_is_both_branches_at_alpha_one_half():
    torch.manual_seed(0)
    model = create_model("bbn-resnet32", 7, width=4, blocks=2).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        f_c, f_r = _branch_features(model, x)
        logits = model(x)
        mixed = model.forward_bilateral(torch.cat([x, x]), 0.5)
    assert f_c.shape == f_r.shape == (5, 16) and logits.shape == (5, 7)
    # the official code's scaling: W 2 [0.5 f_c ; 0.5 f_r] + b = W [f_c ; f_r] + b
    torch.testing.assert_close(logits, model.classifier(torch.cat([0.5 * f_c, 0.5 * f_r], 1) * 2))
    torch.testing.assert_close(logits, mixed)
    assert not torch.allclose(f_c, f_r)  # two distinct branches


@pytest.mark.parametrize("blocks", [1, 2])
def test_training_forward_mixes_each_branch_on_its_own_half(blocks):
    torch.manual_seed(0)
    model = create_model("bbn-resnet32", 7, width=4, blocks=blocks).train()
    x_c, x_r, other = torch.randn(3, 6, 3, 32, 32).unbind(0)
    with torch.no_grad():
        at_one = model.forward_bilateral(torch.cat([x_c, x_r]), 1.0)
        # train-mode BN: each half's statistics are its own, so the reversed half is ignored at alpha 1
        assert torch.equal(at_one, model.forward_bilateral(torch.cat([x_c, other]), 1.0))
        at_zero = model.forward_bilateral(torch.cat([x_c, x_r]), 0.0)
        assert torch.equal(at_zero, model.forward_bilateral(torch.cat([other, x_r]), 0.0))
        assert not torch.allclose(at_one, model.forward_bilateral(torch.cat([other, x_r]), 1.0))
        mixed = model.forward_bilateral(torch.cat([x_c, x_r]), 0.3)
        f_c = model.branch_features(model.trunk(x_c), model.conventional)
        f_r = model.branch_features(model.trunk(x_r), model.rebalancing)
    torch.testing.assert_close(mixed, model.classifier(2 * torch.cat([0.3 * f_c, 0.7 * f_r], 1)))


def test_flops_add_one_last_block_and_the_wider_classifier_to_resnet32():
    # by hand (tests/analytic_flops.py), at 100 classes: ResNet-32 69,474,560 MACs (the RIDE
    # paper's 69.47); BBN adds the re-balancing branch's last block (two 3x3 convolutions, 64
    # channels, 8x8: 2 x (64 x 64 x 9 x 64 + 2 x 64 x 64) = 4,734,976) and 64 x 100 classifier weights
    assert resnet32_macs(classes=100) == 69_474_560
    assert bbn_extra_macs(classes=100) == 4_734_976 + 6_400
    assert count_flops("resnet32", n_classes=100)["mflops"] * 1e6 == pytest.approx(69_474_560, abs=1e-3)
    assert count_flops("bbn-resnet32", n_classes=100)["mflops"] * 1e6 == pytest.approx(74_215_936, abs=1e-3)
    # one block per stage: the branch's block is the striding one, 32 -> 64 channels
    tiny = resnet32_macs(4, 1, 10) + bbn_extra_macs(4, 1, 10)
    assert tiny == 884_896 + 225_440
    assert count_flops("bbn-resnet32", n_classes=10, width=4, blocks=1)["mflops"] * 1e6 == pytest.approx(tiny, abs=1e-3)


def test_train_writes_metrics_and_history(bbn_run_dir, tiny_data):
    out, result = bbn_run_dir
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "bbn" and metrics["epochs"] == 2
    assert metrics["mflops"] == round((884_896 + 225_440) / 1e6, 2) == 1.11  # TINY's BBN, by hand (above)
    assert set(metrics["accuracy"]) == {"all", "many", "medium", "few"}
    assert [row["stage"] for row in result.history] == ["bbn", "bbn"]
    assert all(0 <= row["accuracy"] <= 1 and row["val_accuracy"] is not None for row in result.history)
    assert result.logits.shape == (len(tiny_data.test.labels), 10)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_training_loss_goes_down_at_a_fixed_alpha(tiny_data, monkeypatch):
    # the real adaptor moves the loss's target from y_c to y_r; hold it at 0.5 to see learning
    monkeypatch.setattr(bbn_module, "cumulative_alpha", lambda epoch, epochs: 0.5)
    result = train("bbn", tiny_data, device="cpu", epochs=4, **TINY, **CONSTANT_LR)
    losses = [row["loss"] for row in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_resume_gives_the_same_result_as_an_uninterrupted_run(bbn_run_dir, tiny_data, tmp_path, monkeypatch):
    _, straight = bbn_run_dir
    interrupt_after_checkpoint(monkeypatch, lambda: train("bbn", tiny_data, out=tmp_path, device="cpu", seed=3,
                                                          epochs=2, **TINY))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    resumed = train("bbn", tiny_data, out=tmp_path, device="cpu", seed=3, epochs=2, **TINY)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    np.testing.assert_array_equal(straight.logits, resumed.logits)
