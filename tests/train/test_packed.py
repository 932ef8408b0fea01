"""Packed training: K runs in lockstep compute what each run computes alone."""

import json

import numpy as np
import pytest
import torch

from bvkit.data import sample_subsets
from bvkit.errors import BvkitError
from bvkit.train import train
from bvkit.train.packing import PackMember, packable, train_packed

TINY = {"model_kwargs.width": 4, "model_kwargs.blocks": 1, "batch_size": 64, "val_per_class": 5}
SEEDS = (3, 4, 5)
# lr 1e-3: these tiny nets are chaotic at lr 0.1 (two *single* runs differing only in their
# thread count drift apart by ~1e-3 in the weights within 3 steps), so float rounding would
# hide what the test checks; here separate runs agree to rounding and packed must match them.
SMALL_LR = 1e-3


@pytest.fixture(scope="module")
def lt_data():
    from bvkit.data import make_long_tailed

    return make_long_tailed("synthetic-lt", imbalance=10, n_max=60)


def _separate_and_packed(method, data, tmp_path, **settings):
    subsets = sample_subsets("redraw", data, n_subsets=len(SEEDS), seed=1)
    members = [PackMember(seed, subset, tmp_path / f"packed{k}") for k, (seed, subset) in enumerate(zip(SEEDS, subsets))]
    packed = train_packed(method, data, members, device="cpu", **settings)
    from dataclasses import replace

    separate = [train(method, replace(data, train_indices=subset), seed=seed, device="cpu", resume=False,
                      out=tmp_path / f"single{k}", **settings)
                for k, (seed, subset) in enumerate(zip(SEEDS, subsets))]
    return separate, packed


@pytest.mark.slow
@pytest.mark.parametrize("method,loss_rtol,weight_tol", [("ldam-drw", 1e-4, 1e-3), ("ride", 1e-3, 1e-2)])
def test_packed_runs_match_separate_runs(method, loss_rtol, weight_tol, lt_data, tmp_path):
    # RIDE's maximised diversity term amplifies rounding most: looser, still far below a bug
    # 3 epochs x 3 steps; ldam-drw's DRW and ride's temperature switch on at epoch 2 of 3
    separate, packed = _separate_and_packed(method, lt_data, tmp_path, epochs=3, lr=SMALL_LR, precision="fp32", **TINY)
    for single, run in zip(separate, packed):
        single_loss = [row["loss"] for row in single.history]
        packed_loss = [row["loss"] for row in run.history]
        np.testing.assert_allclose(packed_loss, single_loss, rtol=loss_rtol)
        reference = single.model.state_dict()
        for key, value in run.model.state_dict().items():
            torch.testing.assert_close(value, reference[key], rtol=weight_tol, atol=weight_tol, msg=key)
        assert run.metrics["pack_size"] == 3


def test_packed_outputs_have_the_single_run_format(lt_data, tmp_path):
    subsets = sample_subsets("bootstrap", lt_data, n_subsets=2, seed=0)
    members = [PackMember(k, s, tmp_path / f"run{k}") for k, s in enumerate(subsets)]
    results = train_packed("ce", lt_data, members, device="cpu", epochs=1, **TINY)
    single = train("ce", lt_data, seed=0, out=tmp_path / "single", device="cpu", epochs=1, **TINY)
    for k, result in enumerate(results):
        out = tmp_path / f"run{k}"
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(single.metrics) <= set(metrics)
        with np.load(out / "predictions.npz") as got, np.load(tmp_path / "single" / "predictions.npz") as ref:
            assert set(got.files) == set(ref.files)
            assert got["logits"].shape == ref["logits"].shape
            np.testing.assert_array_equal(got["labels"], ref["labels"])
        # the checkpoint holds a normal single model that reproduces the written logits
        from bvkit.train.checkpoint import load_stage_one

        _, state = load_stage_one(out / "checkpoint.pt")
        result.model.load_state_dict(state)


def test_subsets_of_different_sizes_train_in_separate_packs(lt_data, tmp_path):
    subsets = sample_subsets("redraw", lt_data, n_subsets=2, seed=0)
    head = np.flatnonzero(lt_data.pool.labels[subsets[1]] == 0)[:7]
    shorter = np.delete(subsets[1], head)  # 7 fewer head images, every class still present
    members = [PackMember(0, subsets[0]), PackMember(1, shorter), PackMember(2, subsets[0])]
    results = train_packed("ce", lt_data, members, device="cpu", epochs=1, **TINY)
    assert [r.metrics["pack_size"] for r in results] == [2, 1, 2]
    assert results[1].metrics["n_train"] < results[0].metrics["n_train"]


def test_unpackable_recipes_are_refused(lt_data):
    from bvkit.methods import create_method

    assert packable(create_method("ride")) and packable(create_method("ldam-drw"))
    assert not packable(create_method("crt")) and not packable(create_method("ride-ea"))
    with pytest.raises(BvkitError, match="cannot be packed"):
        train_packed("crt", lt_data, [PackMember(0)], device="cpu", epochs=1, **TINY)


@pytest.mark.parametrize("rotation", [0.0, 15.0])
def test_drawn_up_front_augmentation_equals_the_loader(rotation):
    from bvkit.data import Augment, DeviceLoader
    from bvkit.train.packing import packed_batch

    gen = torch.Generator().manual_seed(0)
    xs = [torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8, generator=gen) for _ in range(2)]
    ys = [torch.randint(0, 4, (37,), generator=gen) for _ in range(2)]
    augment = Augment(crop_padding=2, flip=True, rotation=rotation)
    loaders = [DeviceLoader(x, y, 16, drop_last=True, augment=augment, seed=s) for s, (x, y) in enumerate(zip(xs, ys))]
    for epoch in (0, 3):
        for loader in loaders:
            loader.set_epoch(epoch)
        expected = [list(loader) for loader in loaders]
        plans = [loader.plan(epoch) for loader in loaders]
        for b in range(len(loaders[0])):
            inputs, targets = packed_batch(plans, b, [augment, augment])
            for k in range(2):
                torch.testing.assert_close(inputs[:, 3 * k:3 * k + 3], expected[k][b][0], rtol=0, atol=0)
                torch.testing.assert_close(targets[k], expected[k][b][1])
