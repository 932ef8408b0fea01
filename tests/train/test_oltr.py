import json

import numpy as np
import pytest
import torch
from analytic_flops import oltr_extra_macs, resnet32_macs
from interrupts import interrupt_after_checkpoint
from train_helpers import TINY

from bvkit.data import normalize
from bvkit.errors import BvkitError
from bvkit.methods import create_method
from bvkit.models import count_flops, create_model
from bvkit.models.oltr import CosNormClassifier, ModulatedAttention
from bvkit.train import train, validation_split
from bvkit.train.checkpoint import load_checkpoint
from bvkit.train.procedures import oltr as oltr_module
from bvkit.train.procedures.oltr import GroupScaledSGD, disc_centroids_loss

SMALL = {"width": 4, "blocks": 1}


@pytest.fixture(scope="module")
def oltr_run(tmp_path_factory, tiny_data):
    """A finished OLTR run (2 + 1 epochs) whose centroids are frozen in stage two (lr scale 0),
    so they are still the stage-one class means at the end."""
    out = tmp_path_factory.mktemp("oltr")
    result = train("oltr", tiny_data, out=out, device="cpu", seed=3, epochs=2, precision="fp32", **TINY,
                   **{"procedure_kwargs.centroids_lr_scale": 0.0})
    return out, result


def test_registered_recipe():
    recipe = create_method("oltr")
    assert (recipe.model, recipe.procedure, recipe.epochs, recipe.batch_size, recipe.lr) == (
        "oltr-resnet32", "oltr", 200, 128, 0.1)
    assert (recipe.momentum, recipe.nesterov, recipe.weight_decay, recipe.warmup_epochs) == (0.9, False, 5e-4, 0)
    assert (recipe.lr_milestones, recipe.lr_factors, recipe.drw_epoch, recipe.balanced) == (
        (33, 67), (0.1, 0.01), None, True)
    assert recipe.procedure_kwargs == {"stage2_epochs": 100, "feature_lr_scale": 0.1, "centroids_lr_scale": 0.1,
                                       "feature_loss_weight": 0.01}


def test_both_stages_run_and_write_their_outputs(oltr_run):
    out, result = oltr_run
    stage_one = json.loads((out / "stage1" / "metrics.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert stage_one["method"] == "ce" and stage_one["epochs"] == 2
    assert metrics["method"] == "oltr" and metrics["stage2_epochs"] == 1  # 100 of 200 scaled to 2 epochs
    assert metrics["stage1_accuracy"] == stage_one["accuracy"]
    assert [row["stage"] for row in result.history] == ["stage2"]
    # by hand (tests/analytic_flops.py): TINY's ResNet-32 884,896 MACs; OLTR adds the attention
    # and the meta-embedding, 164,576 (test_compute_counts_every_product_exactly below)
    assert stage_one["mflops"] == round(resnet32_macs(4, 1, 10) / 1e6, 2) == 0.88
    assert metrics["mflops"] == round((resnet32_macs(4, 1, 10) + oltr_extra_macs(4, 10)) / 1e6, 2) == 1.05
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_centroids_are_the_class_means_of_stage_one_features(oltr_run, tiny_data):
    out, result = oltr_run
    stage_one = create_model("resnet32", 10, **SMALL)
    stage_one.load_state_dict(load_checkpoint(out / "stage1" / "checkpoint.pt")["model"])
    stage_one.eval()
    train_idx, _ = validation_split(tiny_data, per_class=TINY["val_per_class"], seed=3)
    images = torch.from_numpy(tiny_data.pool.images[train_idx]).permute(0, 3, 1, 2)
    labels = tiny_data.pool.labels[train_idx]
    with torch.no_grad():
        features = stage_one.forward_features(normalize(images, tiny_data.mean, tiny_data.std)).numpy()
    expected = np.stack([features[labels == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(result.model.centroids.detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_a_loaded_model_gives_the_stage_one_features_and_classifier():
    torch.manual_seed(0)
    stage_one, model = create_model("resnet32", 10, **SMALL), create_model("oltr-resnet32", 10, **SMALL)
    stage_one.eval(), model.eval()
    model.load_stage_one(stage_one.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), stage_one.forward_features(x))
    assert torch.equal(model.meta.hallucinator.weight, stage_one.classifier.weight)
    with pytest.raises(BvkitError, match="does not fit"):
        model.load_stage_one(create_model("resnet32", 10, width=8, blocks=1).state_dict())


def official_modulated_attention(layer, x):
    """The official ModulatedAttLayer.embedded_gaussian, written out on NCHW tensors."""
    b, _, h, w = x.shape
    g_x = layer.g(x).view(b, layer.inter_channels, -1).permute(0, 2, 1)
    theta_x = layer.theta(x).view(b, layer.inter_channels, -1).permute(0, 2, 1)
    phi_x = layer.phi(x).view(b, layer.inter_channels, -1)
    attention = torch.softmax(torch.matmul(theta_x, phi_x), dim=-1)
    context = torch.matmul(attention, g_x).permute(0, 2, 1).contiguous().view(b, layer.inter_channels, h, w)
    mask = layer.conv_mask(context)
    spatial = torch.softmax(layer.fc_spatial(x.view(b, -1)), dim=1).view(b, 1, h, w)
    return spatial * mask + x


def test_modulated_attention_starts_as_identity_and_matches_the_official_layer():
    torch.manual_seed(0)
    layer = ModulatedAttention(channels=8, spatial=4)
    x = torch.randn(3, 8, 4, 4)
    with torch.no_grad():
        assert torch.equal(layer(x), x)  # conv_mask starts at zero
        layer.conv_mask.weight.normal_()
        out = layer(x)
        assert out.shape == x.shape and not torch.allclose(out, x)
        torch.testing.assert_close(out, official_modulated_attention(layer, x))
        channels_last = layer(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(channels_last, out)
    with pytest.raises(BvkitError, match="4x4"):
        layer(torch.randn(1, 8, 8, 8))


def test_cosnorm_classifier_squashes_the_norm_and_stays_below_its_scale():
    torch.manual_seed(0)
    classifier = CosNormClassifier(6, 5)
    x = torch.randn(7, 6) * torch.tensor([1e-3, 0.1, 1.0, 10.0, 1e3, 1e5, 0.0])[:, None]
    with torch.no_grad():
        logits = classifier(x)
        norm = x.norm(dim=1, keepdim=True)
        direction = x / norm.clamp_min(1e-30)
        weight = classifier.weight / classifier.weight.norm(dim=1, keepdim=True)
        expected = 16.0 * (norm / (1 + norm)) * direction @ weight.T
        torch.testing.assert_close(logits, expected)
        assert logits.abs().max() < 16.0 and torch.equal(logits[-1], torch.zeros(5))
        aligned = classifier(1e6 * classifier.weight[:1])  # long and along class 0: logit -> 16
    assert aligned[0, 0] == pytest.approx(16.0, rel=1e-5)


def test_meta_embedding_reachability_memory_and_selector():
    torch.manual_seed(0)
    meta = create_model("oltr-resnet32", 5, **SMALL).meta
    with torch.no_grad():
        meta.centroids.normal_()
        v = torch.randn(4, 16)
        distances = torch.stack([torch.stack([(v[i] - meta.centroids[c]).pow(2).sum().sqrt() for c in range(5)])
                                 for i in range(4)])
        gamma = 10.0 / distances.min(dim=1, keepdim=True).values
        torch.testing.assert_close(meta.reachability(v), gamma)
        memory = torch.softmax(meta.hallucinator(v), dim=1) @ meta.centroids
        selector = torch.tanh(meta.selector(v))
        torch.testing.assert_close(meta.embed(v), gamma * (v + selector * memory))
        torch.testing.assert_close(meta(v), meta.classifier(gamma * (v + selector * memory)))
        meta.selector.weight.zero_(), meta.selector.bias.zero_()  # no concept selected: v_meta = gamma v
        torch.testing.assert_close(meta(v), meta.classifier(gamma * v))
        meta.centroids[2] = v[1]  # a sample on a centroid: gamma stays finite
        assert torch.isfinite(meta(v)).all()


def test_compute_counts_every_product_exactly():
    c, classes, positions, inter = 16, 10, 64, 8  # width 4: 16 channels on an 8x8 map
    extra = (3 * positions * c * inter + positions * inter * c  # theta, phi, g, conv_mask
             + 2 * positions * positions * inter  # attention scores and read-out
             + positions * c * positions  # fc_spatial
             + 3 * classes * c + c * c  # distances, hallucinator, memory read-out, selector
             + classes * c)  # cosine-norm classifier (replaces the linear one)
    assert extra - classes * c == oltr_extra_macs(4, classes) == 164_576
    plain = resnet32_macs(4, 1, classes)  # stem, three blocks, linear classifier: 884,896
    oltr_mflops = count_flops(create_model("oltr-resnet32", classes, **SMALL))["mflops"]
    assert count_flops(create_model("resnet32", classes, **SMALL))["mflops"] * 1e6 == pytest.approx(plain, abs=1e-3)
    assert oltr_mflops * 1e6 == pytest.approx(plain + extra - classes * c, abs=1e-3)
    assert count_flops("oltr-resnet32", n_classes=classes, **SMALL)["mflops"] == pytest.approx(oltr_mflops)


def test_disc_centroids_loss_value_and_the_official_gradients():
    torch.manual_seed(0)
    features = torch.randn(6, 3, requires_grad=True)
    centroids = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 3, 3, 3])
    loss = disc_centroids_loss(features, labels, centroids, margin=1e4, repel_weight=0.01)
    f, cen = features.detach(), centroids.detach()
    attract = (f - cen[labels]).pow(2).sum() / 2 / 6
    squared = torch.cdist(f, cen).pow(2)
    other = squared.masked_fill(labels[:, None] == torch.arange(4), 0).sum() / 24
    torch.testing.assert_close(loss.detach(), attract + 0.01 * (1e4 - other))
    (0.5 * disc_centroids_loss(features, labels, centroids, margin=0.0)).backward()  # repel off
    torch.testing.assert_close(features.grad, 0.5 * (f - cen[labels]) / 6)
    # centroids: the center-loss update, sum_{y_i = c} (c - f_i) / (1 + n_c) / B, not scaled by 0.5
    expected = torch.stack([(cen[c] - f[labels == c]).sum(0) / (1 + (labels == c).sum()) / 6 for c in range(4)])
    torch.testing.assert_close(centroids.grad, expected)


def test_group_scaled_sgd_trains_each_group_at_its_rate():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = GroupScaledSGD([{"params": [a], "lr_scale": 1.0}, {"params": [b], "lr_scale": 0.1}], lr=0.5)
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    optimizer.step()
    torch.testing.assert_close(a.detach(), torch.full((2,), -0.5))
    torch.testing.assert_close(b.detach(), torch.full((2,), -0.05))
    assert [group["lr"] for group in optimizer.param_groups] == [0.5, 0.5]

    model = create_model("oltr-resnet32", 10, **SMALL)
    groups = oltr_module._param_groups(model, create_method("oltr").procedure_kwargs)
    assert [group["lr_scale"] for group in groups] == [0.1, 1.0, 0.1]
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter once
    assert groups[2]["params"][0] is model.centroids


def test_stage_two_lowers_its_loss_at_constant_lr(tiny_data):
    result = train("oltr", tiny_data, device="cpu", epochs=2, schedule="constant", lr=0.05, **TINY,
                   **{"procedure_kwargs.stage2_epochs": 500})
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    settings = {"epochs": 2, **TINY, "procedure_kwargs.stage2_epochs": 200}  # stage two: 2 epochs
    straight = train("oltr", tiny_data, out=tmp_path / "straight", device="cpu", seed=3, **settings)

    interrupt_after_checkpoint(  # stage one's two epochs, then stage two's first
        monkeypatch, lambda: train("oltr", tiny_data, out=tmp_path / "resumed", device="cpu", seed=3, **settings),
        stop=lambda content, count: count == 3)

    def no_recompute(*args):
        raise AssertionError("a resumed stage two recomputed the centroids")

    monkeypatch.setattr(oltr_module, "class_centroids", no_recompute)
    resumed = train("oltr", tiny_data, out=tmp_path / "resumed", device="cpu", seed=3, **settings)

    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    np.testing.assert_array_equal(straight.logits, resumed.logits)
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]
    assert len(straight.history) == 2


@pytest.mark.parametrize("overrides, message", [
    ({"procedure_kwargs.warp": 1}, "unknown"),
    ({"procedure_kwargs.stage2_epochs": 0}, "stage2_epochs"),
    ({"model": "resnet32"}, "needs an OLTR model"),
])
def test_bad_settings_are_bvkit_errors(overrides, message, tiny_data):
    with pytest.raises(BvkitError, match=message):
        train("oltr", tiny_data, device="cpu", epochs=1, **TINY, **overrides)
