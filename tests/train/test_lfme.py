import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from analytic_flops import resnet32_macs
from interrupts import interrupt_after_checkpoint
from train_helpers import TINY

from bvkit.data import long_tail_counts
from bvkit.errors import BvkitError
from bvkit.methods import create_method
from bvkit.train import train
from bvkit.train.checkpoint import load_checkpoint
from bvkit.train.procedures.lfme import (
    LFMELoss,
    class_groups,
    curriculum_fraction,
    easiest_first_ranks,
    group_distillation,
    self_paced_weight,
)
from bvkit.train.builders import build_loss


def _random_counts(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([3, 15, 20, 40, 100, 101, 300], size=rng.integers(3, 13))  # ties and empty splits


@pytest.mark.parametrize("counts", [long_tail_counts(500, 100, 100), long_tail_counts(5000, 10, 100),
                                    long_tail_counts(60, 10, 10)] + [_random_counts(s) for s in range(20)])
def test_three_non_empty_groups_partition_the_classes_in_count_order(counts):
    groups = list(class_groups(counts).values())
    assert len(groups) == 3 and all(len(g) for g in groups)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(counts)))
    for larger, smaller in zip(groups, groups[1:]):
        assert counts[larger].min() >= counts[smaller].max()


def test_groups_are_the_shot_splits_unless_one_is_empty():
    cifar100 = long_tail_counts(500, 100, 100)
    groups = class_groups(cifar100)
    assert list(groups) == ["many", "medium", "few"]
    assert [len(g) for g in groups.values()] == [35, 35, 30]  # CIFAR-100-LT's split sizes (docs/subsets.md)
    # CIFAR-10-LT at IF 100 has no few-shot class: three runs of 4, 3, 3 classes by count
    groups = class_groups(long_tail_counts(5000, 10, 100))
    assert list(groups) == ["head", "middle", "tail"]
    assert [g.tolist() for g in groups.values()] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # ties by class index; classes need not come sorted by count
    groups = class_groups(np.array([5, 50, 5, 500, 50, 5, 500]))
    assert [g.tolist() for g in groups.values()] == [[3, 6], [1, 4], [0, 2, 5]]  # shot splits
    groups = class_groups(np.array([30, 60, 30, 60, 30]))
    assert [g.tolist() for g in groups.values()] == [[1, 3], [0, 2], [4]]
    with pytest.raises(BvkitError, match="at least 3 classes"):
        class_groups(np.array([50, 10]))


def test_self_paced_weight_is_one_below_the_threshold_zero_at_the_expert_and_linear_between():
    expert, threshold = 0.8, 0.3
    assert self_paced_weight(0.0, expert, threshold) == 1.0
    assert self_paced_weight(0.24, expert, threshold) == pytest.approx(1.0)  # exactly threshold x expert
    assert self_paced_weight(0.52, expert, threshold) == pytest.approx(0.5)
    assert self_paced_weight(0.38, expert, threshold) == pytest.approx(0.75)
    assert self_paced_weight(0.8, expert, threshold) == 0.0
    assert self_paced_weight(0.95, expert, threshold) == 0.0
    weights = [self_paced_weight(s, expert, threshold) for s in np.linspace(0.24, 0.8, 8)]
    assert np.allclose(np.diff(weights), np.diff(weights)[0])  # a straight line from 1 to 0
    assert self_paced_weight(0.0, 0.0, threshold) == 0.0  # an expert that knows nothing teaches nothing
    assert self_paced_weight(0.5, math.nan, threshold) == 1.0  # no validation image: keep distilling


def test_curriculum_fraction_rises_linearly_to_one():
    assert [curriculum_fraction(e, 0.5, 100) for e in (0, 50, 99, 100, 150)] == [0.5, 0.75, 0.995, 1.0, 1.0]
    assert curriculum_fraction(0, 0.5, 0) == 1.0


def _loss(labels, confidence, start=0.2, full_epoch=4, expert_accuracy=(0.8, 0.5, 0.6)):
    group_of_class = np.array([0, 0, 1, 1, 2, 2])
    ranks = easiest_first_ranks(confidence, group_of_class[labels])
    base = build_loss(create_method("lfme"), np.ones(6, dtype=int), torch.device("cpu"))
    return LFMELoss(base, group_of_class, labels, ranks, list(expert_accuracy), temperature=2.0,
                    distill_weight=1.0, self_paced_threshold=0.3, curriculum_start=start,
                    curriculum_epochs=full_epoch)


def test_the_selected_instances_are_each_groups_most_confident_and_grow_with_the_epochs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 50)
    confidence = rng.random(50)
    loss = _loss(labels, confidence)
    group = np.array([0, 0, 1, 1, 2, 2])[labels]
    previous = np.zeros(50, dtype=bool)
    for epoch in range(6):
        loss.set_epoch(epoch)
        selected = loss.selected.numpy()
        for g in range(3):
            members = np.flatnonzero(group == g)
            take = math.ceil(round(curriculum_fraction(epoch, 0.2, 4) * len(members), 9))
            easiest = members[np.argsort(-confidence[members])[:take]]
            assert set(np.flatnonzero(selected & (group == g))) == set(easiest)
        assert (selected >= previous).all()
        previous = selected
    assert previous.all()


def test_distillation_is_zero_when_the_student_matches_the_expert_on_the_groups_classes():
    torch.manual_seed(0)
    teacher = torch.randn(4, 6)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0]]).bool()
    student = torch.where(mask, teacher, torch.randn(4, 6) * 5)  # other classes differ: no effect
    assert torch.allclose(group_distillation(student, teacher, mask, 2.0), torch.zeros(4), atol=1e-6)
    student = torch.randn(4, 6, requires_grad=True)
    kl = group_distillation(student, teacher, mask, 2.0)
    assert (kl > 0).all()
    for i in range(4):  # the KL over the sample's own classes alone
        cls = mask[i].nonzero()[:, 0]
        expected = F.kl_div(F.log_softmax(student[i, cls] / 2, 0), F.softmax(teacher[i, cls] / 2, 0), reduction="sum")
        assert kl[i].item() == pytest.approx(expected.item(), rel=1e-5)
    kl.sum().backward()
    assert torch.isfinite(student.grad).all() and (student.grad[~mask] == 0).all()


def test_loss_is_ce_plus_weighted_distillation_of_the_selected_samples():
    torch.manual_seed(1)
    labels = np.array([0, 1, 2, 3, 4, 5, 0, 2, 4, 5])
    loss = _loss(labels, np.linspace(1, 0, 10), start=0.5, full_epoch=10)
    loss.student_accuracy.copy_(torch.tensor([0.0, 0.5, 0.42], dtype=torch.float64))
    loss.set_epoch(0)
    weights = torch.tensor([1.0, 0.0, (0.6 - 0.42) / (0.7 * 0.6)])  # below threshold, at expert, between
    logits, teachers = torch.randn(10, 6), torch.randn(3, 10, 6)
    targets = torch.stack((torch.as_tensor(labels), torch.arange(10)), 1)
    value = loss({"logits": logits, "expert_logits": teachers}, targets)

    group = torch.as_tensor(labels) // 2
    mask = group[:, None] == torch.arange(6)[None, :] // 2
    kl = group_distillation(logits, teachers[group, torch.arange(10)], mask, 2.0)
    expected = F.cross_entropy(logits, torch.as_tensor(labels)) + (weights[group] * loss.selected * kl).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.selected.sum() < 10  # the curriculum left some samples out


@pytest.fixture(scope="module")
def lfme_run(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("lfme")
    return out, train("lfme", tiny_data, out=out, device="cpu", epochs=2, seed=3, **TINY)


def test_lfme_writes_metrics_of_one_plain_resnet_and_its_experts(lfme_run, tiny_data):
    out, result = lfme_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert tiny_data.pool.images.shape[1:] == (32, 32, 3)
    assert metrics["method"] == "lfme" and metrics["epochs"] == 2
    # the student, one plain ResNet-32 (TINY: width 4, one block per stage), by hand: 884,896 MACs
    assert metrics["mflops"] == round(resnet32_macs(width=4, blocks=1, classes=10) / 1e6, 2) == 0.88
    assert metrics["grouping"] == "equal-class-thirds"  # the tiny counts 60..6 have no many-shot class
    assert [e["classes"] for e in metrics["experts"].values()] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert metrics["training_images_relative"] == pytest.approx(2.0)  # the experts see each image once more
    for expert in metrics["experts"].values():
        assert 0 <= expert["val_accuracy"] <= 1 and 0 <= expert["distill_weight"] <= 1
    assert len(result.history) == 2 and all(row["val_accuracy"] is not None for row in result.history)


def test_each_expert_trains_only_on_its_groups_images(lfme_run, tiny_data):
    out, result = lfme_run
    parent_counts = np.array(json.loads(load_checkpoint(out / "checkpoint.pt")["run_key"])["counts"])
    for name, expert in result.metrics["experts"].items():
        payload = load_checkpoint(out / f"expert-{name}" / "checkpoint.pt")
        counts = json.loads(payload["run_key"])["counts"]
        assert counts == parent_counts[expert["classes"]].tolist()  # its K classes, all their images
        assert expert["n_train"] == sum(counts)
        assert payload["recipe"]["model_kwargs"] == {"width": 4, "blocks": 1}  # the size overrides reached it
        with np.load(out / f"expert-{name}" / "predictions.npz") as npz:
            assert list(npz["class_names"]) == [tiny_data.class_names[c] for c in expert["classes"]]


def test_resume_of_the_student_equals_an_uninterrupted_run(lfme_run, tiny_data, tmp_path, monkeypatch):
    _, straight = lfme_run
    interrupt_after_checkpoint(  # the student's first epoch, after all three experts
        monkeypatch, lambda: train("lfme", tiny_data, out=tmp_path, device="cpu", epochs=2, seed=3, **TINY),
        stop=lambda content, count: content["stage_name"] == "lfme")
    assert set(load_checkpoint(tmp_path / "checkpoint.pt")["loss"]) >= {"ranks", "expert_accuracy", "student_accuracy"}
    resumed = train("lfme", tiny_data, out=tmp_path, device="cpu", epochs=2, seed=3, **TINY)

    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    np.testing.assert_array_equal(straight.logits, resumed.logits)
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]
    def measured(metrics):  # all but the wall-clock seconds
        return {name: {k: v for k, v in e.items() if k != "train_seconds"} for name, e in metrics["experts"].items()}

    assert measured(straight.metrics) == measured(resumed.metrics)


def test_bad_options_are_one_line_errors(tiny_data):
    with pytest.raises(BvkitError, match="temperature"):
        train("lfme", tiny_data, device="cpu", epochs=1, **TINY, **{"procedure_kwargs.temperature": 0.0})
    with pytest.raises(BvkitError, match="procedure options"):
        train("lfme", tiny_data, device="cpu", epochs=1, **TINY, **{"procedure_kwargs.tau": 1.0})
