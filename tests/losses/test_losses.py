"""Each loss against a direct float64 formula on small inputs, plus the RIDE-specific facts."""

import numpy as np
import pytest
import torch

from bvkit.errors import BvkitError
from bvkit.losses import (
    class_balanced_weights,
    create_loss,
    diversity_temperatures,
    ldam_margins,
    list_losses,
    routing_labels,
)

COUNTS = np.array([50, 20, 8, 3])


def cifar100_lt_counts():
    return np.array([int(500 * 0.01 ** (c / 99)) for c in range(100)])


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 3, 1])
    return logits, target


def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ce_rows(z, y):
    return -log_softmax(z)[np.arange(len(y)), y]


def weighted_mean(values, weights):
    return (values * weights).sum() / weights.sum()


def value(loss, output, target):
    return loss(output, target).item()


def test_class_balanced_weights_and_margins():
    w = class_balanced_weights(COUNTS)
    raw = (1 - 0.9999) / (1 - 0.9999 ** COUNTS)
    np.testing.assert_allclose(w, raw / raw.sum() * 4)
    assert w.sum() == pytest.approx(4)
    m = ldam_margins(cifar100_lt_counts())
    assert m.max() == pytest.approx(0.5) and m[99] == m.max()  # the rarest class
    np.testing.assert_allclose(m[0] / m[99], (5 / 500) ** 0.25)


def test_cifar100_lt_temperatures():
    counts = cifar100_lt_counts()
    assert counts.sum() == 10847
    code = diversity_temperatures(counts, gamma=0.05, form="code")
    assert code.min() == pytest.approx(0.807, abs=1e-3) and code.max() == pytest.approx(1.0)
    assert code.mean() == pytest.approx(0.847, abs=1e-3)
    paper = diversity_temperatures(counts, gamma=0.05, form="paper")
    assert paper.min() == pytest.approx(0.772, abs=1e-3) and paper.max() == pytest.approx(1.0)


def test_ce_cb_focal_and_balanced_softmax(batch):
    z, y = batch
    zn, yn = z.numpy(), y.numpy()
    rows = ce_rows(zn, yn)
    w = class_balanced_weights(COUNTS)
    assert value(create_loss("ce", COUNTS), z, y) == pytest.approx(rows.mean())
    assert value(create_loss("cb-ce", COUNTS), z, y) == pytest.approx(weighted_mean(rows, w[yn]))
    p = np.exp(-rows)
    focal = create_loss("focal", COUNTS, gamma=2.0)
    assert value(focal, z, y) == pytest.approx(((1 - p) ** 2 * rows).mean())
    assert value(create_loss("focal", COUNTS, gamma=0.0), z, y) == pytest.approx(rows.mean())
    cb_focal = create_loss("cb-focal", COUNTS, gamma=1.0)
    assert value(cb_focal, z, y) == pytest.approx((w[yn] * (1 - p) * rows).mean())
    prior = np.log(COUNTS / COUNTS.sum())
    balanced = ce_rows(zn + prior, yn).mean()
    assert value(create_loss("balanced-softmax", COUNTS), z, y) == pytest.approx(balanced)
    half = ce_rows(zn + 0.5 * prior, yn).mean()
    assert value(create_loss("logit-adjustment", COUNTS, tau=0.5), z, y) == pytest.approx(half)


def test_ldam_and_drw_switch(batch):
    z, y = batch
    zn, yn = z.numpy(), y.numpy()
    m = ldam_margins(COUNTS)
    shifted = zn.copy()
    shifted[np.arange(len(yn)), yn] -= 30 * m[yn]
    rows = ce_rows(shifted, yn)
    assert value(create_loss("ldam", COUNTS), z, y) == pytest.approx(rows.mean())
    drw = create_loss("ldam-drw", COUNTS)  # drw_epoch 160, 0-based
    drw.set_epoch(159)
    assert value(drw, z, y) == pytest.approx(rows.mean())
    drw.set_epoch(160)
    w = class_balanced_weights(COUNTS)
    assert value(drw, z, y) == pytest.approx(weighted_mean(rows, w[yn]))
    ce_drw = create_loss("ce-drw", COUNTS, drw_epoch=2)
    ce_drw.set_epoch(2)
    assert value(ce_drw, z, y) == pytest.approx(weighted_mean(ce_rows(zn, yn), w[yn]))


def kl_rows(p_log, q_log):
    return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def ride_reference(expert_logits, y, counts, lam, epoch, drw_epoch=160, form="code", pairwise=False):
    """RIDE loss straight from the recipe in ``docs/recipes.md``, float64, per expert."""
    e_logits = expert_logits.numpy()
    n, b, _ = e_logits.shape
    on = epoch >= drw_epoch
    T = diversity_temperatures(counts, 0.05, 1.0, form) if on else np.ones(len(counts))
    w = class_balanced_weights(counts) if on else np.ones(len(counts))
    m = ldam_margins(counts)
    mean = e_logits.mean(0)
    total = 0.0
    for i in range(n):
        shifted = e_logits[i].copy()
        shifted[np.arange(b), y] -= 30 * m[y]
        total += weighted_mean(ce_rows(shifted, y), w[y])
        if pairwise:
            kls = [kl_rows(log_softmax(e_logits[i] / T), log_softmax(e_logits[j] / T)).mean()
                   for j in range(n) if j != i]
            total += lam * T.mean() ** 2 * sum(kls) / (n - 1)
        else:
            kl = kl_rows(log_softmax(mean / T), log_softmax(e_logits[i] / T)).mean()
            total += lam * T.mean() ** 2 * kl
    return total


@pytest.mark.parametrize("epoch", [0, 160])
@pytest.mark.parametrize("form", ["code", "paper"])
def test_ride_loss_against_formula(epoch, form):
    gen = torch.Generator().manual_seed(1)
    expert_logits = 10 * torch.randn(3, 8, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])
    loss = create_loss("ride", COUNTS, temperature_form=form)
    loss.set_epoch(epoch)
    got = loss({"expert_logits": expert_logits}, y).item()
    want = ride_reference(expert_logits, y.numpy(), COUNTS, -0.45, epoch, form=form)
    assert got == pytest.approx(want, rel=1e-6)
    pair = create_loss("ride", COUNTS, temperature_form=form, diversity="pairwise")
    pair.set_epoch(epoch)
    want_pair = ride_reference(expert_logits, y.numpy(), COUNTS, -0.45, epoch, form=form, pairwise=True)
    assert pair({"expert_logits": expert_logits}, y).item() == pytest.approx(want_pair, rel=1e-6)


def ride_reference_torch(expert_logits, mean_logits, y, counts, lam, epoch, drw_epoch=160):
    """``ride_reference`` (diversity="mean") in torch float64, for its gradients; the diversity
    term's target ``softmax(mean_logits / T)`` is a constant (detached), as the reference code's
    ``torch.no_grad()`` makes it."""
    on = epoch >= drw_epoch
    T = torch.as_tensor(diversity_temperatures(counts, 0.05, 1.0, "code") if on else np.ones(len(counts)))
    w = torch.as_tensor(class_balanced_weights(counts) if on else np.ones(len(counts)))[y]
    margin = 30 * torch.as_tensor(ldam_margins(counts))[y]
    target = torch.log_softmax(mean_logits.detach() / T, -1)
    total = 0.0
    for z in expert_logits:
        shifted = z - torch.nn.functional.one_hot(y, len(counts)) * margin[:, None]
        ce = -torch.log_softmax(shifted, -1).gather(1, y[:, None])[:, 0]
        log_p = torch.log_softmax(z / T, -1)
        kl = (target.exp() * (target - log_p)).sum(-1).mean()
        total = total + (w * ce).sum() / w.sum() + lam * T.mean() ** 2 * kl
    return total


@pytest.mark.parametrize("epoch", [0, 160])
def test_ride_diversity_target_is_a_constant_the_mean_logits_get_no_gradient(epoch):
    """The diversity term pulls each expert against the experts' mean held constant (the
    reference code's ``no_grad``): no gradient reaches the mean logits the model hands over, and
    each expert's gradient is that of its own softmax against a fixed target.

    (Through the target the gradient would vanish anyway when the target is exactly the softmax
    of the experts' mean logits: that is the normalised geometric mean of their softmaxes, where
    sum_i KL(q || p_i) is stationary in q. So the test hands the loss mean logits as a leaf of
    their own, nudged off the experts' mean, where a gradient through the target would show.)"""
    gen = torch.Generator().manual_seed(4)
    expert_logits = (3 * torch.randn(3, 8, 4, generator=gen, dtype=torch.float64)).requires_grad_()
    y = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])
    loss = create_loss("ride", COUNTS)
    loss.set_epoch(epoch)
    nudged = (expert_logits.detach().mean(0) + torch.randn(8, 4, generator=gen, dtype=torch.float64)).requires_grad_()
    for mean_logits in (expert_logits.mean(0), nudged):  # RideNet's own (in the graph), and a leaf
        got, to_mean = torch.autograd.grad(loss({"expert_logits": expert_logits, "logits": mean_logits}, y),
                                           (expert_logits, mean_logits), allow_unused=True)
        (want,) = torch.autograd.grad(ride_reference_torch(expert_logits, mean_logits, y, COUNTS, -0.45, epoch),
                                      expert_logits)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)  # the loss keeps float32 buffers (margins)
        assert to_mean is None or not to_mean.any(), "the diversity target passed a gradient to the mean logits"
    # the diversity term alone at T = 1, against the constant q: lambda (p_i - q) / B for expert i
    z = expert_logits.detach().requires_grad_()
    (g,) = torch.autograd.grad(create_loss("ride", COUNTS, drw_epoch=None).diversity_term(z, nudged), z)
    q = torch.softmax(nudged.detach(), -1)
    torch.testing.assert_close(g, -0.45 * (torch.softmax(z.detach(), -1) - q) / 8, rtol=1e-9, atol=1e-12)


def test_lambda_zero_is_no_diversity_term_not_a_collaborative_loss():
    gen = torch.Generator().manual_seed(2)
    expert_logits = 10 * torch.randn(3, 8, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])
    out = {"expert_logits": expert_logits}
    plain = create_loss("ride", COUNTS, diversity_weight=0.0)(out, y).item()
    ldam = create_loss("ldam", COUNTS)
    assert plain == pytest.approx(sum(ldam(z, y).item() for z in expert_logits))
    collab = create_loss("ride", COUNTS, diversity_weight=0.0, collaborative=True)(out, y).item()
    assert collab == pytest.approx(3 * ldam(expert_logits.mean(0), y).item())
    assert collab != pytest.approx(plain)


def test_ride_loss_other_base_and_no_drw():
    gen = torch.Generator().manual_seed(3)
    expert_logits = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    loss = create_loss("ride", COUNTS, base="ce", diversity_weight=0.0, drw_epoch=None)
    loss.set_epoch(500)
    assert loss.temperature == 1.0
    ce = create_loss("ce", COUNTS)
    want = sum(ce(z, y).item() for z in expert_logits)
    assert loss({"expert_logits": expert_logits}, y).item() == pytest.approx(want)
    with pytest.raises(BvkitError):
        create_loss("ride", COUNTS, base="routing")


def test_negative_lambda_raises_expert_ensemble_divergence():
    from bvkit.models import create_model

    counts = np.array([40, 20, 10, 5, 5])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 16, 16, generator=gen)
    y = torch.randint(0, 5, (32,), generator=gen)

    def divergence_after_step(lam):
        torch.manual_seed(0)
        model = create_model("ride-resnet32", 5, num_experts=3, width=4, blocks=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss = create_loss("ride", counts, diversity_weight=lam)
        loss(model.forward_experts(x), y).backward()
        opt.step()
        with torch.no_grad():
            out = model.forward_experts(x)  # train mode: batch statistics, as in the step
        mean_log = torch.log_softmax(out["logits"], -1)
        kl = sum(
            torch.nn.functional.kl_div(torch.log_softmax(z, -1), mean_log, log_target=True,
                                       reduction="batchmean")
            for z in out["expert_logits"]
        )
        return kl.item()

    assert divergence_after_step(-0.45) > 1.2 * divergence_after_step(0.0)


def test_routing_labels_hand_made():
    # 3 experts, 4 samples, 2 classes, target 0 for all. Correctness of prefix ensembles:
    # s0: right at 1          -> labels (0, 0)
    # s1: wrong at 1, right at 2 -> (1, 0)
    # s2: wrong, wrong, right  -> (1, 1)
    # s3: wrong everywhere     -> (0, 0)
    e1 = [[1, 0], [0, 1], [0, 3], [0, 1]]
    e2 = [[1, 0], [3, 0], [0, 1], [0, 1]]
    e3 = [[1, 0], [0, 0], [9, 0], [0, 1]]
    logits = torch.tensor([e1, e2, e3], dtype=torch.float32)
    labels = routing_labels(logits, torch.zeros(4, dtype=torch.long))
    assert labels.tolist() == [[0, 0], [1, 0], [1, 1], [0, 0]]


def test_routing_loss_against_formula():
    gen = torch.Generator().manual_seed(4)
    expert_logits = torch.randn(3, 10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=gen)
    eta = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    labels = routing_labels(expert_logits, y).numpy()
    s = 1 / (1 + np.exp(-eta.numpy()))
    want = (-100 * labels * np.log(s) - (1 - labels) * np.log(1 - s)).mean()
    got = create_loss("routing", COUNTS)({"routing_logits": eta, "expert_logits": expert_logits}, y)
    assert got.item() == pytest.approx(want)


def test_distillation_term():
    gen = torch.Generator().manual_seed(5)
    expert_logits = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64)
    teacher = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=gen)
    ride = create_loss("ride", COUNTS)
    distill = create_loss("ride-distill", COUNTS)
    out = {"expert_logits": expert_logits, "teacher_logits": teacher}
    t = 1.5
    kl = kl_rows(log_softmax(teacher.numpy() / t), log_softmax(expert_logits.mean(0).numpy() / t)).mean()
    want = ride(out, y).item() + t * t * kl
    assert distill(out, y).item() == pytest.approx(want)
    with pytest.raises(BvkitError):
        distill({"expert_logits": expert_logits}, y)


@pytest.mark.parametrize("name", ["ce", "cb-ce", "ce-drw", "focal", "cb-focal", "ldam", "ldam-drw",
                                  "balanced-softmax", "logit-adjustment", "ride", "ride-distill",
                                  "routing"])
def test_every_loss_has_finite_gradients_and_device_buffers(name):
    assert name in list_losses()
    loss = create_loss(name, COUNTS)
    loss.set_epoch(170)
    gen = torch.Generator().manual_seed(6)
    expert_logits = (30 * torch.randn(3, 5, 4, generator=gen)).requires_grad_()
    eta = torch.randn(5, 2, generator=gen).requires_grad_()
    y = torch.tensor([0, 1, 2, 3, 3])
    if name in ("ride", "ride-distill", "routing"):
        output = {"expert_logits": expert_logits, "logits": expert_logits.mean(0),
                  "teacher_logits": torch.randn(5, 4, generator=gen), "routing_logits": eta}
        leaf = eta if name == "routing" else expert_logits
    else:
        output, leaf = expert_logits[0], expert_logits
    result = loss(output, y)
    result.backward()
    assert torch.isfinite(result) and torch.isfinite(leaf.grad).all()
    if name != "routing":  # per-class vectors are buffers: .to(device) moves them
        assert len(list(loss.buffers())) >= 2


def test_bad_inputs():
    with pytest.raises(BvkitError, match="unknown loss"):
        create_loss("hinge", COUNTS)
    with pytest.raises(BvkitError):
        create_loss("ce", [10, 0, 3])
    with pytest.raises(BvkitError):
        create_loss("ce", [])
    with pytest.raises(BvkitError):
        create_loss("focal", COUNTS, gamma=-1)
    with pytest.raises(BvkitError):
        create_loss("ldam", COUNTS, reweight="sometimes")
    with pytest.raises(BvkitError):
        create_loss("ce", COUNTS)(torch.randn(3, 5), torch.tensor([0, 1, 2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_losses_run_on_cuda():
    loss = create_loss("ride", COUNTS).to("cuda")
    loss.set_epoch(170)
    out = {"expert_logits": torch.randn(3, 5, 4, device="cuda")}
    assert torch.isfinite(loss(out, torch.tensor([0, 1, 2, 3, 3], device="cuda")))
