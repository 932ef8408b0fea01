"""Shapes, parameter counts, init, registry, and the fused-experts == separate-experts identity."""

import math

import pytest
import torch

from bvkit.errors import BvkitError
from bvkit.models import (
    RideNet,
    create_model,
    fused_state_dict,
    list_models,
    register_model,
    separate_state_dict,
)
from bvkit.models.layers import ExpertBatchNorm2d, ExpertConv2d

TINY = {"width": 4, "blocks": 1}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet32_shapes_and_size():
    model = create_model("resnet32", 100)
    assert n_params(model) == pytest.approx(0.47e6, abs=0.005e6)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 100)
    assert model.forward_features(x).shape == (2, 64)
    assert isinstance(model.classifier, torch.nn.Linear)


def test_resnet32_knobs():
    gray = create_model("resnet32", 10, width=4, blocks=2, in_channels=1, classifier="cosine")
    out = gray(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    # cosine classifier: logits are 30 * cosines
    assert out.abs().max() <= 30.0 + 1e-4
    assert create_model("resnet32-ldam", 10, **TINY).classifier.scale == 30.0
    with pytest.raises(BvkitError):
        create_model("resnet32", 10, classifier="mlp")
    with pytest.raises(BvkitError):
        create_model("resnet32", 10, width=0)


def test_ride_resnet32_shapes_and_size():
    model = create_model("ride-resnet32", 100, num_experts=3)
    assert n_params(model) == pytest.approx(0.78e6, abs=0.01e6)
    assert model.num_experts == 3 and model.experts_used is None
    model.eval()
    out = model.forward_experts(torch.randn(2, 3, 32, 32))
    assert out["expert_logits"].shape == (3, 2, 100)
    assert out["features"].shape == (3, 2, 48)  # reduce_dimension: 24 / 48 channels
    torch.testing.assert_close(out["logits"], out["expert_logits"].mean(0))
    assert out["expert_logits"].abs().max() <= 30.0 + 1e-4
    full = create_model("ride-resnet32", 100, num_experts=3, reduce_dimension=False, **TINY)
    assert full.num_features == 16


def _tiny_pair(name="ride-resnet32", n_classes=7, expert_mode="auto", **kw):
    torch.manual_seed(0)
    fused = create_model(name, n_classes, fused=True, expert_mode=expert_mode, **kw)
    separate = create_model(name, n_classes, fused=False, channels_last=False, **kw)
    separate.load_state_dict(separate_state_dict(fused.state_dict(), fused.num_experts))
    return fused, separate


@pytest.mark.parametrize("mode", ["grouped", "split"])
def test_fused_equals_separate_experts_train_and_eval(mode):
    fused, separate = _tiny_pair(num_experts=3, expert_mode=mode, **TINY)
    x = torch.randn(6, 3, 32, 32)
    y = torch.randint(0, 7, (6,))
    for model in (fused, separate):
        model.train()
    out_f, out_s = fused.forward_experts(x), separate.forward_experts(x)
    torch.testing.assert_close(out_f["expert_logits"], out_s["expert_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_f["features"], out_s["features"], atol=1e-5, rtol=1e-4)
    # same gradients, mapped by the same rule
    for model, out in ((fused, out_f), (separate, out_s)):
        torch.nn.functional.cross_entropy(out["expert_logits"].flatten(0, 1), y.repeat(3)).backward()
    grads_f = {k: p.grad for k, p in fused.named_parameters()}
    grads_s = {k: p.grad for k, p in separate.named_parameters()}
    mapped = separate_state_dict(grads_f, 3)
    for key, grad in grads_s.items():
        torch.testing.assert_close(mapped[key], grad, atol=1e-4, rtol=1e-3)
    # BN running statistics moved the same way; eval outputs then agree too
    separate_stats = separate_state_dict(fused.state_dict(), 3)
    for key, value in separate.state_dict().items():
        torch.testing.assert_close(separate_stats[key], value, atol=1e-5, rtol=1e-4)
    fused.eval(), separate.eval()
    torch.testing.assert_close(fused(x), separate(x), atol=1e-4, rtol=1e-4)


def test_state_dict_mapping_round_trip():
    fused, separate = _tiny_pair(num_experts=2, **TINY)
    back = fused_state_dict(separate.state_dict(), 2)
    assert back.keys() == fused.state_dict().keys()
    for key, value in fused.state_dict().items():
        assert torch.equal(back[key], value), key
    # expert 1's first conv = the second chunk of the fused weight
    first = fused.experts.blocks[0].conv1.weight
    assert torch.equal(separate.experts[1].blocks[0].conv1.weight, first[first.shape[0] // 2 :])


def test_experts_used_subset_evaluation():
    torch.manual_seed(0)
    model = create_model("ride-resnet32", 5, num_experts=3, **TINY).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        full = model.forward_experts(x)["expert_logits"]
        model.experts_used = 2
        sub = model.forward_experts(x)
        torch.testing.assert_close(sub["expert_logits"], full[:2], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sub["logits"], full[:2].mean(0), atol=1e-5, rtol=1e-5)
        assert model.forward_features(x).shape == (4, 2 * model.num_features)
        _, middle = model.expert_outputs(model.shared(x), 1, 2)
        torch.testing.assert_close(middle[0], full[1], atol=1e-5, rtol=1e-5)
    with pytest.raises(BvkitError):
        model.experts_used = 4


def test_subset_batchnorm_updates_only_its_experts():
    bn = ExpertBatchNorm2d(3, num_experts=2).train()
    x = torch.randn(8, 3, 4, 4) + 5.0
    bn(x, experts=(1, 2))
    assert torch.allclose(bn.running_mean[:3], torch.zeros(3))
    torch.testing.assert_close(bn.running_mean[3:], 0.1 * x.mean(dim=(0, 2, 3)))


def test_expert_conv_init_uses_per_expert_fans():
    torch.manual_seed(0)
    model = create_model("ride-resnet50", 10, num_experts=4)
    conv = model.experts.blocks[1].conv3  # 1x1, 192 -> 768 per expert, Kaiming fan_out
    assert isinstance(conv, ExpertConv2d) and conv.weight.shape[0] == 4 * 768
    expected = math.sqrt(2.0 / 768)
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    cifar = create_model("ride-resnet32", 10, num_experts=3).experts.blocks[1].conv1
    assert cifar.weight.std().item() == pytest.approx(math.sqrt(2.0 / (24 * 9)), rel=0.05)


def test_imagenet_sizes_on_meta_device():
    with torch.device("meta"):
        sizes = {
            name: n_params(create_model(name, 1000))
            for name in ("resnet50", "resnext50-32x4d", "resnet10")
        }
        ride = create_model("ride-resnet50", 1000, num_experts=3)
        ridex = create_model("ride-resnext50", 1000, num_experts=3)
    assert sizes["resnet50"] == 25_557_032  # torchvision's count
    assert sizes["resnext50-32x4d"] == 25_028_904
    assert ride.num_features == 1536 and ridex.num_features == 1536
    assert ride.experts.blocks[0].conv1.weight.shape == (3 * 192, 512, 1, 1)


def test_imagenet_forward_and_grouped_expert_identity():
    torch.manual_seed(0)
    assert create_model("resnet10", 10).eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    fused, separate = _tiny_pair("ride-resnext50", n_classes=6, expert_mode="grouped", num_experts=2)
    fused.eval(), separate.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            fused.forward_experts(x)["expert_logits"],
            separate.forward_experts(x)["expert_logits"],
            atol=1e-4,
            rtol=1e-4,
        )


@pytest.mark.parametrize("name", ["ride-resnet32", "resnet32"])
def test_channels_last_matches_nchw(name):
    torch.manual_seed(0)
    fast = create_model(name, 5, width=4, blocks=1).eval()  # channels_last by default
    plain = create_model(name, 5, width=4, blocks=1, channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)


def test_expert_modes_agree_and_validate():
    torch.manual_seed(0)
    model = create_model("ride-resnet32", 5, num_experts=3, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = []
        for mode in ("grouped", "split", "auto"):
            model.expert_mode = mode
            outs.append(model.forward_experts(x)["expert_logits"])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs[1], outs[2], atol=1e-4, rtol=1e-4)
    with pytest.raises(BvkitError):
        model.expert_mode = "parallel"
    model.expert_mode = "auto"  # split: float32 shared features on the CPU (any number of threads)
    assert model._split(torch.zeros(1))
    assert not model._split(torch.zeros(1, dtype=torch.bfloat16))  # bf16 (autocast): grouped
    assert not model._split(torch.zeros(1, device="meta"))  # stands in for a GPU: grouped
    model.expert_mode = "grouped"
    assert not model._split(torch.zeros(1))


def test_registry():
    assert {"ride-resnet32", "ride-resnet50", "ride-resnext50", "ride-resnet10"} <= set(list_models("ride*"))
    assert "resnet32" in list_models() and "resnet32" not in list_models("ride*")
    assert list_models("resnet3?") == ["resnet32"]
    with pytest.raises(BvkitError, match="unknown model"):
        create_model("resnet33", 10)
    with pytest.raises(BvkitError, match="bad arguments"):
        create_model("resnet32", 10, experts=3)
    with pytest.raises(BvkitError, match="already registered"):
        register_model("resnet32")(lambda n_classes: None)
    assert isinstance(create_model("ride-resnet32", 4, **TINY), RideNet)


@pytest.mark.parametrize("name, kwargs", [("resnet32", {}), ("resnet32-ldam", {}), ("bbn-resnet32", {}),
                                          ("ride-resnet32", {"num_experts": 2})])
def test_classifier_heads_run_in_float32_under_bf16_autocast(name, kwargs):
    # the trunk runs in bf16, the head (a few FLOPs) in float32: logits are not rounded to bf16
    model = create_model(name, 10, **TINY, **kwargs).eval()
    features = []
    model.classifier.register_forward_pre_hook(lambda module, args: features.append(args[0].dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(4, 3, 32, 32))
    assert features == [torch.bfloat16] and logits.dtype == torch.float32


def test_packed_linear_heads_run_in_float32_under_bf16_autocast():
    from bvkit.models.packed_models import PackedLinear

    head = PackedLinear(8, 5, num_models=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(torch.randn(3, 4, 8, dtype=torch.bfloat16)).dtype == torch.float32
