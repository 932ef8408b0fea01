"""Packed training: K runs in lockstep compute what each run computes alone, and record, write
and resume as single runs do."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from interrupts import interrupt_after_checkpoint

from bvkit.data import sample_subsets
from bvkit.errors import BvkitError
from bvkit.methods import create_method
from bvkit.train import loop, train
from bvkit.train.builders import build_model
from bvkit.train.checkpoint import CHECKPOINT, load_checkpoint, load_stage_one
from bvkit.train.packing import PackMember, packable, train_packed

TINY = {"model_kwargs.width": 4, "model_kwargs.blocks": 1, "batch_size": 64, "val_per_class": 5}
SEEDS = (3, 4, 5)
# lr 1e-4: these tiny nets are chaotic at lr 0.1 (two *single* runs differing only in their
# thread count drift apart by ~1e-3 in the weights within 3 steps), so float rounding would
# hide what the tests check. At lr 1e-4 one epoch moves the weights by ~5e-3 .. 1e-2, and a
# packed run's weights end within 0.3 % of that of the same run trained alone (measured on
# ldam-drw and ride: each tensor within 3 % of its own first epoch's change), its test
# logits within 1e-4 of their range, its losses within 3e-6 relative, its accuracies equal.
SMALL_LR = {"lr": 1e-4, "precision": "fp32"}
EPOCH_SHARE = 0.02  # the largest weight difference allowed, as a share of the largest first-epoch change
TENSOR_SHARE = 0.1  # each tensor's, as a share of its own first-epoch change


@pytest.fixture(scope="module")
def lt_data():
    from bvkit.data import make_long_tailed

    return make_long_tailed("synthetic-lt", imbalance=10, n_max=60)


@pytest.fixture
def epoch_states(monkeypatch):
    """Every checkpoint's model state by (run directory, epoch), as the runs write them."""
    states = {}
    real = loop.save_checkpoint

    def save(path, **content):
        states[(path.parent, content["epoch"])] = {k: v.clone() for k, v in content["model"].items()}
        return real(path, **content)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    return states


def initial_state(method, seed, data, **settings) -> dict:
    recipe = create_method(method, **settings)
    return build_model(recipe, len(data.class_names), 3, seed, torch.device("cpu")).state_dict()


def assert_same_weights(got: dict, reference: dict, initial: dict, first_epoch: dict) -> None:
    """``got``'s parameters equal ``reference``'s to well below one epoch's training: all within
    ``EPOCH_SHARE`` of the largest change of the first epoch (``initial`` -> ``first_epoch``),
    each within ``TENSOR_SHARE`` of its own change."""
    names = [name for name, value in initial.items() if value.is_floating_point() and "running" not in name]
    change = {name: (first_epoch[name] - initial[name]).abs().max().item() for name in names}
    largest = max(change.values())
    assert largest > 1e-3  # the runs did move
    for name in names:
        difference = (got[name] - reference[name]).abs().max().item()
        assert difference <= EPOCH_SHARE * largest, (name, difference, largest)
        assert difference <= TENSOR_SHARE * change[name] + 1e-7, (name, difference, change[name])


def assert_same_history(got: list, reference: list) -> None:
    assert [(row["stage"], row["epoch"]) for row in got] == [(row["stage"], row["epoch"]) for row in reference]
    np.testing.assert_allclose([row["loss"] for row in got], [row["loss"] for row in reference], rtol=2e-5)
    for column in ("accuracy", "val_accuracy", "val_medium", "val_few", "test_accuracy"):  # one image apart at most
        for a, b in zip(got, reference):
            assert (a[column] is None) == (b[column] is None) and (a[column] is None or abs(a[column] - b[column]) < 0.01), column


def uneven_subsets(data, n: int) -> list[np.ndarray]:
    """``n`` training sets of one size whose class counts differ (so do the runs' losses): redrawn
    long-tailed sets, the ``k``-th with ``4 k`` images of the head class swapped for unused
    pool images of the last class."""
    labels = np.asarray(data.pool.labels)
    subsets = []
    for k, subset in enumerate(sample_subsets("redraw", data, n_subsets=n, seed=1)):
        head = np.flatnonzero(labels[subset] == 0)[: 4 * k]
        spare = np.setdiff1d(np.flatnonzero(labels == labels.max()), subset)[: 4 * k]
        subsets.append(np.concatenate([np.delete(subset, head), spare]))
    return subsets


def _separate_and_packed(method, data, tmp_path, **settings):
    subsets = uneven_subsets(data, len(SEEDS))
    assert len({len(subset) for subset in subsets}) == 1  # one pack
    members = [PackMember(seed, subset, tmp_path / f"packed{k}") for k, (seed, subset) in enumerate(zip(SEEDS, subsets))]
    packed = train_packed(method, data, members, device="cpu", **settings)
    separate = [train(method, replace(data, train_indices=subset), seed=seed, device="cpu", resume=False,
                      out=tmp_path / f"single{k}", **settings)
                for k, (seed, subset) in enumerate(zip(SEEDS, subsets))]
    return separate, packed


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ldam-drw", "ride"])
def test_packed_runs_match_separate_runs(method, lt_data, tmp_path, epoch_states):
    # 3 epochs x 3 steps; ldam-drw's DRW and ride's temperature switch on at epoch 2 of 3
    settings = {"epochs": 3, **SMALL_LR, **TINY}
    separate, packed = _separate_and_packed(method, lt_data, tmp_path, **settings)
    for k, (single, run) in enumerate(zip(separate, packed)):
        initial = initial_state(method, SEEDS[k], lt_data, **settings)
        assert_same_weights(run.model.state_dict(), single.model.state_dict(), initial,
                            epoch_states[(tmp_path / f"single{k}", 1)])
        # each epoch's checkpoint holds the run's own model: the packed run's first one too
        assert_same_weights(epoch_states[(tmp_path / f"packed{k}", 1)], epoch_states[(tmp_path / f"single{k}", 1)],
                            initial, epoch_states[(tmp_path / f"single{k}", 1)])
        assert_same_history(run.history, single.history)
        with np.load(tmp_path / f"packed{k}" / "predictions.npz") as npz:
            logits = npz["logits"][0]
        np.testing.assert_allclose(logits, single.logits, rtol=0, atol=1e-3 * np.ptp(single.logits))
        assert run.metrics["pack_size"] == 3
        assert run.metrics["train_accuracy"] == pytest.approx(single.metrics["train_accuracy"], abs=0.01)
        assert run.metrics["accuracy"] == pytest.approx(single.metrics["accuracy"], abs=0.01)


def test_packed_outputs_have_the_single_run_format(lt_data, tmp_path):
    subsets = sample_subsets("bootstrap", lt_data, n_subsets=2, seed=0)
    members = [PackMember(k, s, tmp_path / f"run{k}") for k, s in enumerate(subsets)]
    results = train_packed("ce", lt_data, members, device="cpu", epochs=2, **TINY)
    single = train("ce", lt_data, seed=0, out=tmp_path / "single", device="cpu", epochs=2, **TINY)
    reference_history = pd.read_csv(tmp_path / "single" / "history.csv")
    for k, result in enumerate(results):
        out = tmp_path / f"run{k}"
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(single.metrics) <= set(metrics)
        history = pd.read_csv(out / "history.csv")
        assert list(history.columns) == list(reference_history.columns)
        # the same columns filled: training accuracy, validation per split, the watched test set
        assert (history.notna() == reference_history.notna()).all().all()
        assert metrics["train_accuracy"] == pytest.approx(history["accuracy"].iloc[-1]) and metrics["train_accuracy"] > 0
        assert history["test_accuracy"].iloc[-1] == pytest.approx(metrics["accuracy"]["all"], abs=0.01)
        for name in ("snapshots.npz", "heldout.npz"):
            assert (out / name).is_file()
        assert not (out / "progress.json").exists()  # finished
        with np.load(out / "predictions.npz") as got, np.load(tmp_path / "single" / "predictions.npz") as ref:
            assert set(got.files) == set(ref.files)
            assert got["logits"].shape == ref["logits"].shape
            np.testing.assert_array_equal(got["labels"], ref["labels"])
            written = got["logits"][0]
        # the checkpoint holds a normal single model that reproduces the written logits
        recipe, state = load_stage_one(out / "checkpoint.pt")
        model = build_model(create_method("ce", epochs=2, **TINY), 10, 3, 0, torch.device("cpu"))
        model.load_state_dict(state)
        for key, value in result.model.state_dict().items():
            assert torch.equal(value, state[key]), key
        from bvkit.train.data import device_tensors, make_augment, make_normalizer
        from bvkit.train.loop import predict

        test = device_tensors(lt_data.test, torch.device("cpu"))
        logits = predict(model.eval(), test.x, make_normalizer(make_augment(create_method("ce"), lt_data)),
                         torch.device("cpu"), precision=metrics["precision"])["logits"].numpy()
        np.testing.assert_allclose(logits, written, rtol=0, atol=1e-5)
        assert recipe["epochs"] == 2 and load_checkpoint(out / CHECKPOINT)["seed"] == k


def test_an_interrupted_pack_resumes_to_the_uninterrupted_result(lt_data, tmp_path, monkeypatch):
    subsets = sample_subsets("redraw", lt_data, n_subsets=2, seed=2)

    def run(name):
        members = [PackMember(seed, subset, tmp_path / f"{name}{k}") for k, (seed, subset) in enumerate(zip(SEEDS, subsets))]
        return train_packed("ldam-drw", lt_data, members, device="cpu", epochs=3, **TINY)

    straight = run("straight")
    # Ctrl-C once both runs have written their epoch-1 checkpoints (DRW starts at epoch 2 of 3)
    interrupt_after_checkpoint(monkeypatch, lambda: run("resumed"), stop=lambda content, count: count == 2)
    assert [load_checkpoint(tmp_path / f"resumed{k}" / CHECKPOINT)["epoch"] for k in range(2)] == [1, 1]
    assert (tmp_path / "resumed0" / "progress.json").is_file()  # in progress, as a single run says it
    resumed = run("resumed")
    for k, (a, b) in enumerate(zip(straight, resumed)):
        for key, value in a.model.state_dict().items():
            assert torch.equal(value, b.model.state_dict()[key]), key
        assert [row["epoch"] for row in b.history] == [1, 2, 3]
        drop = ("seconds", "images_per_s")
        assert [{c: v for c, v in row.items() if c not in drop} for row in a.history] == \
               [{c: v for c, v in row.items() if c not in drop} for row in b.history]
        with np.load(tmp_path / f"straight{k}" / "predictions.npz") as x, np.load(tmp_path / f"resumed{k}" / "predictions.npz") as y:
            np.testing.assert_array_equal(x["logits"], y["logits"])
        assert a.metrics["accuracy"] == b.metrics["accuracy"] and b.metrics["pack_size"] == 2


def test_runs_interrupted_at_different_epochs_resume_each_from_its_own(lt_data, tmp_path, monkeypatch, epoch_states):
    subsets = sample_subsets("redraw", lt_data, n_subsets=2, seed=2)
    settings = {"epochs": 3, **SMALL_LR, **TINY}

    def run(name):
        members = [PackMember(seed, subset, tmp_path / f"{name}{k}") for k, (seed, subset) in enumerate(zip(SEEDS, subsets))]
        return train_packed("ldam-drw", lt_data, members, device="cpu", **settings)

    straight = run("straight")
    # stopped between the two runs' epoch-2 checkpoints: run 0 is at epoch 2, run 1 at epoch 1
    interrupt_after_checkpoint(monkeypatch, lambda: run("resumed"), stop=lambda content, count: count == 3)
    resumed = run("resumed")
    assert [r.metrics["pack_size"] for r in resumed] == [1, 1]  # two packs: they resumed from different epochs
    for k, (a, b) in enumerate(zip(straight, resumed)):
        assert [row["epoch"] for row in b.history] == [1, 2, 3]
        assert_same_weights(b.model.state_dict(), a.model.state_dict(), initial_state("ldam-drw", SEEDS[k], lt_data, **settings),
                            epoch_states[(tmp_path / f"straight{k}", 1)])
        assert_same_history(b.history, a.history)


@pytest.mark.parametrize("first, then", [("packed", "single"), ("single", "packed")])
def test_a_packed_runs_checkpoint_is_a_single_runs(first, then, lt_data, tmp_path, monkeypatch, epoch_states):
    """A run interrupted after epoch 1 in a pack resumes alone, and one interrupted alone resumes
    in a pack: its checkpoint holds its own model, optimiser and loss state either way."""
    subset = sample_subsets("redraw", lt_data, n_subsets=1, seed=3)[0]
    settings = {"epochs": 3, **SMALL_LR, **TINY}
    data = replace(lt_data, train_indices=subset)

    def run(how, out):
        if how == "single":
            return train("ldam-drw", data, seed=SEEDS[0], out=out, device="cpu", **settings)
        return train_packed("ldam-drw", lt_data, [PackMember(SEEDS[0], subset, out)], device="cpu", **settings)[0]

    straight = run("single", tmp_path / "straight")
    interrupt_after_checkpoint(monkeypatch, lambda: run(first, tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["epoch"] == 1
    resumed = run(then, tmp_path / "resumed")
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert_same_weights(resumed.model.state_dict(), straight.model.state_dict(),
                        initial_state("ldam-drw", SEEDS[0], lt_data, **settings), epoch_states[(tmp_path / "straight", 1)])
    assert_same_history(resumed.history, straight.history)


def test_packed_runs_write_their_own_tensorboard_scalars(lt_data, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    subsets = sample_subsets("redraw", lt_data, n_subsets=2, seed=0)
    members = [PackMember(k, s, tmp_path / f"run{k}") for k, s in enumerate(subsets)]
    results = train_packed("ce", lt_data, members, device="cpu", epochs=2, tensorboard=True, **TINY)
    for k, result in enumerate(results):
        reader = event_accumulator.EventAccumulator(str(tmp_path / f"run{k}" / "tensorboard"))
        reader.Reload()
        for column in ("loss", "accuracy", "val_accuracy"):
            points = [(event.step, event.value) for event in reader.Scalars(f"stage1/{column}")]
            assert [step for step, _ in points] == [1, 2]
            np.testing.assert_allclose([value for _, value in points], [row[column] for row in result.history], rtol=1e-6)
    with pytest.raises(BvkitError, match="tensorboard needs an output directory"):
        train_packed("ce", lt_data, [PackMember(0, subsets[0])], device="cpu", epochs=1, tensorboard=True, **TINY)


def test_subsets_of_different_sizes_train_in_separate_packs(lt_data, tmp_path):
    subsets = sample_subsets("redraw", lt_data, n_subsets=2, seed=0)
    head = np.flatnonzero(lt_data.pool.labels[subsets[1]] == 0)[:7]
    shorter = np.delete(subsets[1], head)  # 7 fewer head images, every class still present
    members = [PackMember(0, subsets[0]), PackMember(1, shorter), PackMember(2, subsets[0])]
    results = train_packed("ce", lt_data, members, device="cpu", epochs=1, **TINY)
    assert [r.metrics["pack_size"] for r in results] == [2, 1, 2]
    assert results[1].metrics["n_train"] < results[0].metrics["n_train"]


def test_unpackable_recipes_are_refused(lt_data):
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


def test_a_compiled_pack_trains_as_the_eager_pack_and_each_run_records_it(lt_data):
    subsets = sample_subsets("redraw", lt_data, n_subsets=2, seed=0)
    members = [PackMember(k, s) for k, s in enumerate(subsets)]
    settings = {"device": "cpu", "epochs": 2, "precision": "fp32", **TINY}
    eager = train_packed("ce", lt_data, members, compile="off", **settings)
    compiled = train_packed("ce", lt_data, members, compile="on", **settings)
    for plain, fast in zip(eager, compiled):
        assert plain.metrics["compile"]["enabled"] is False
        assert fast.metrics["compile"]["enabled"] and fast.metrics["compile"]["graphs"] >= 1
        np.testing.assert_allclose([row["loss"] for row in fast.history], [row["loss"] for row in plain.history],
                                   rtol=1e-4)
    with pytest.raises(BvkitError, match="compile must be one of"):
        train_packed("ce", lt_data, members, compile="yes", **settings)
