"""Expert-assignment routers: training logits and the dynamic inference rule."""

import pytest
import torch

from bvkit.errors import BvkitError
from bvkit.models import ExpertRouter, RoutedRide, create_model


@pytest.fixture(scope="module")
def ride3():
    torch.manual_seed(0)
    return create_model("ride-resnet32", 10, num_experts=3, width=4, blocks=1).eval()


def hand_set_router(num_features, threshold):
    """eta = top-1 ensemble logit - threshold: go on iff the ensemble's top logit > threshold."""
    router = ExpertRouter(3, num_features, 10, top_k=30)
    assert router.top_k == 10  # never more than C
    with torch.no_grad():
        router.head.weight.zero_()
        router.head.weight[0, 0] = 1.0
        router.head.bias.fill_(-threshold)
    return router


def test_dynamic_inference_rule_on_a_hand_set_router(ride3):
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        all_logits = ride3.forward_experts(x)["expert_logits"]  # (3, B, C)
    prefix = all_logits.cumsum(0) / torch.arange(1, 4).view(-1, 1, 1)
    top1 = prefix[0].max(dim=1).values.sort().values
    threshold = (top1[7] + top1[8]).item() / 2  # half the samples go on; no sample near a tie
    routed = RoutedRide(ride3, hand_set_router(ride3.num_features, threshold))
    out = routed.route(x)

    for b in range(x.shape[0]):  # the rule, sample by sample
        used = 1
        while used < 3 and prefix[used - 1, b].max().item() - threshold > 0:
            used += 1
        assert out["n_experts"][b].item() == used
        torch.testing.assert_close(out["logits"][b], all_logits[:used, b].mean(0), atol=1e-5, rtol=1e-5)
    counts = torch.bincount(out["n_experts"], minlength=4)
    assert counts[1] > 0 and counts[2:].sum() > 0  # the test exercises both branches


def test_routing_extremes(ride3):
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        full = ride3.forward_experts(x)["expert_logits"]
    stop = RoutedRide(ride3, hand_set_router(ride3.num_features, threshold=1e4)).route(x)
    assert stop["n_experts"].tolist() == [1] * 5
    torch.testing.assert_close(stop["logits"], full[0], atol=1e-5, rtol=1e-5)
    go = RoutedRide(ride3, hand_set_router(ride3.num_features, threshold=-1e4)).route(x)
    assert go["n_experts"].tolist() == [3] * 5
    torch.testing.assert_close(go["logits"], full.mean(0), atol=1e-5, rtol=1e-5)


def test_training_logits_match_the_steps_and_experts_stay_frozen(ride3):
    torch.manual_seed(1)
    routed = RoutedRide(ride3)
    routed.train()
    assert not ride3.training and routed.router.training
    assert all(not p.requires_grad for p in ride3.parameters())
    x = torch.randn(4, 3, 32, 32)
    out = routed.forward_experts(x)
    eta = out["routing_logits"]
    assert eta.shape == (4, 2)
    logits, feats = out["expert_logits"], out["features"]
    torch.testing.assert_close(eta[:, 0], routed.router.step(0, feats[0], logits[0]))
    torch.testing.assert_close(eta[:, 1], routed.router.step(1, feats[1], logits[:2].mean(0)))
    eta.sum().backward()
    assert routed.router.head.weight.grad is not None
    with pytest.raises(BvkitError):
        ExpertRouter(1, 8, 10)
