import copy
import json

import numpy as np
import pytest
import torch
from analytic_flops import resnet32_macs
from interrupts import interrupt_after_checkpoint
from train_helpers import TINY
from torch import nn

from bvkit.data import DeviceLoader, normalize
from bvkit.methods import create_method
from bvkit.models import create_model
from bvkit.train import train
from bvkit.train.procedures.m2m import (
    M2mLoader,
    Translator,
    acceptance_probabilities,
    pick_seeds,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
COUNTS = [80, 40, 20, 10]
# a short run that generates in both epochs (so a resume must restore the counters); gamma 0
# and beta 0.5 so that the weak 2-epoch g still gets translations accepted
GENERATING = {"epochs": 2, **TINY, "procedure_kwargs.gen_start": 0, "procedure_kwargs.gamma": 0.0,
              "procedure_kwargs.beta": 0.5}


def linear(n_classes=4, scale=1.0, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, n_classes))
    with torch.no_grad():
        model[1].weight.normal_(0, scale)
        model[1].bias.zero_()
    return model


def translator(g, f, counts=COUNTS, **options):
    kw = {"beta": 0.9, "lam": 0.5, "gamma": 0.9, "steps": 10, "step_size": 0.1, "noise_norm": 0.5, **options}
    return Translator(g, f, counts, MEAN, STD, **kw)


def balanced_batch(n, seed=0, n_classes=4):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = normalize(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen), MEAN, STD)
    return x, y


def test_recipe_is_the_official_one():
    recipe = create_method("m2m")
    assert (recipe.procedure, recipe.model, recipe.loss, recipe.drw_epoch) == ("m2m", "resnet32", "ce", None)
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.weight_decay) == (200, 128, 0.1, 2e-4)
    assert recipe.nesterov is False  # the official SGD has no Nesterov momentum
    assert (recipe.warmup_epochs, recipe.lr_milestones) == (5, (160, 180))
    assert recipe.procedure_kwargs == {"beta": 0.999, "lam": 0.5, "gamma": 0.9, "steps": 10, "step_size": 0.1,
                                       "noise_norm": 0.5, "gen_start": 160}


def test_acceptance_is_one_minus_beta_to_the_count_gap_and_zero_from_smaller_sources():
    counts = torch.tensor([100.0, 50.0, 10.0, 10.0])
    targets, sources = torch.tensor([2, 1, 0]), torch.tensor([0, 1, 2, 3])
    p = acceptance_probabilities(counts, targets, sources, beta=0.99)
    expected = torch.tensor([
        [1 - 0.99 ** 90, 1 - 0.99 ** 40, 0.0, 0.0],  # target 10 images: the 10-image class is no source
        [1 - 0.99 ** 50, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # the largest class has no source
    ])
    torch.testing.assert_close(p, expected)


def test_seeds_are_drawn_in_proportion_to_the_weights():
    weights = torch.tensor([[0.0, 1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).repeat_interleave(20000, 0)
    index, has_seed = pick_seeds(weights, torch.rand(40000, generator=torch.Generator().manual_seed(0)))
    first = index[:20000]
    assert has_seed[:20000].all() and not has_seed[20000:].any()
    assert set(first.tolist()) == {1, 2}
    assert abs((first == 2).float().mean().item() - 0.75) < 0.01


def test_loader_is_plain_before_gen_start_then_class_balanced_with_translations():
    counts = torch.tensor(COUNTS)
    y = torch.repeat_interleave(torch.arange(4), counts)
    x = torch.randint(0, 256, (len(y), 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = DeviceLoader(x, y, 50, mean=MEAN, std=STD, seed=1)
    balanced = DeviceLoader(x, y, 50, balanced=True, mean=MEAN, std=STD, seed=2)
    t = translator(linear(), linear(seed=1), steps=1)
    loader = M2mLoader(plain, balanced, t, gen_start=1, seed=3)
    assert len(loader) == len(plain) == 3

    first = list(loader)  # epoch 0: the imbalanced set, each image once
    assert [len(b[1]) for b in first] == [50, 50, 50] and int(t.stats["translated"]) == 0
    assert torch.bincount(torch.cat([b[1] for b in first]), minlength=4).tolist() == COUNTS

    drawn = []
    for epoch in range(1, 41):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert [tuple(b[0].shape) for b in batches] == [(50, 3, 8, 8)] * 3  # the batch keeps its size
        drawn.append(torch.cat([b[1] for b in batches]))
    assert int(t.stats["translated"]) == 40 * 150
    # images drawn with probability 1 / N_y: every class about a quarter of the batch
    shares = torch.bincount(torch.cat(drawn), minlength=4).float() / (40 * 150)
    assert (shares - 0.25).abs().max() < 0.03, shares


def test_a_class_k_position_asks_for_a_synthetic_sample_with_probability_one_minus_nk_over_nmax():
    x, y = balanced_batch(8000)
    _, generated, _ = translator(linear(), linear(seed=1), steps=0).rebalance(x, y, torch.Generator().manual_seed(0))
    shares = torch.stack([generated[y == k].float().mean() for k in range(4)])
    torch.testing.assert_close(shares, torch.tensor([0.0, 0.5, 0.75, 0.875]), atol=0.03, rtol=0)


def test_accepted_translations_convince_g_and_rejected_positions_keep_the_real_sample():
    g, f = linear(scale=1.0), linear(seed=1)
    x, y = balanced_batch(400)
    gamma = 0.9
    t = translator(g, f, gamma=gamma)
    out, generated, accepted = t.rebalance(x, y, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert accepted.any() and (generated & ~accepted).any() and not (accepted & ~generated).any()
    with torch.no_grad():
        confidence = torch.softmax(g(out[accepted]), 1).gather(1, y[accepted].unsqueeze(1)).squeeze(1)
    assert (confidence >= gamma - 1e-5).all()
    assert not torch.equal(out[accepted], x[accepted])
    assert torch.equal(out[~accepted], x[~accepted])  # real images of their own class k
    assert int(t.stats["generated"]) == int(generated.sum()) and int(t.stats["accepted"]) == int(accepted.sum())

    # a g that cannot reach gamma: nothing is accepted and the batch is the real one
    out, generated, accepted = translator(linear(scale=1e-4), f, gamma=0.99).rebalance(
        x, y, torch.Generator().manual_seed(0))
    assert generated.any() and not accepted.any() and torch.equal(out, x)


def test_translation_leaves_f_parameters_gradients_and_bn_statistics_untouched():
    torch.manual_seed(0)
    f = create_model("resnet32", 4, width=4, blocks=1)
    g = create_model("resnet32", 4, width=4, blocks=1).eval()
    f.train()
    f(torch.randn(8, 3, 8, 8))  # BN running statistics away from their initial values
    before_f, before_g = copy.deepcopy(f.state_dict()), copy.deepcopy(g.state_dict())
    x, y = balanced_batch(16)
    translator(g, f, steps=2).rebalance(x, y, torch.Generator().manual_seed(0))
    assert f.training and not g.training
    for before, model in ((before_f, f), (before_g, g)):
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in f.parameters())


@pytest.fixture(scope="module")
def straight_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("m2m")
    return train("m2m", tiny_data, out=out, device="cpu", seed=3, **GENERATING)


def test_train_writes_metrics_with_resnet_mflops_and_generation_stats(straight_run):
    metrics = json.loads((straight_run.out / "metrics.json").read_text())
    assert metrics["method"] == "m2m"
    tiny = resnet32_macs(width=4, blocks=1, classes=10)  # TINY's ResNet-32 by hand: 884,896 MACs
    assert tiny == 884_896 and metrics["mflops"] == round(tiny / 1e6, 2) == 0.88
    assert metrics["generated"] > 0 and 0 < metrics["accepted"] <= metrics["generated"]
    assert metrics["accepted_rate"] == metrics["accepted"] / metrics["generated"]
    overhead = metrics["training_overhead"]
    assert overhead["gen_start_epoch"] == 0 and overhead["steps"] == 10
    assert overhead["translated_images"] == 2 * metrics["n_train"]  # two generating epochs
    # g (the pre-trained CE) and f (the returned network) are both TINY's ResNet-32; a generated
    # sample costs 10 steps x 3 x (g + f) (forward and backward of both) + g's acceptance check
    assert overhead["g_mflops"] == overhead["f_mflops"] == round(tiny / 1e6, 4) == 0.8849
    assert overhead["mflops_per_generated_sample"] == round((10 * 3 * 2 + 1) * tiny / 1e6, 2) == 53.98
    pretrained = json.loads((straight_run.out / "pretrained" / "metrics.json").read_text())
    assert pretrained["method"] == "ce" and pretrained["epochs"] == 2 and pretrained["n_train"] == metrics["n_train"]


def test_resume_gives_the_same_result_as_an_uninterrupted_run(straight_run, tiny_data, tmp_path, monkeypatch):
    interrupt_after_checkpoint(  # g's two epochs, then f's first
        monkeypatch, lambda: train("m2m", tiny_data, out=tmp_path, device="cpu", seed=3, **GENERATING),
        stop=lambda content, count: count == 3)
    resumed = train("m2m", tiny_data, out=tmp_path, device="cpu", seed=3, **GENERATING)

    for key, value in straight_run.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    np.testing.assert_array_equal(straight_run.logits, resumed.logits)
    for key in ("generated", "accepted", "training_overhead"):
        assert straight_run.metrics[key] == resumed.metrics[key], key
    assert [row["loss"] for row in straight_run.history] == [row["loss"] for row in resumed.history]
