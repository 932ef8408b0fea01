import os

import numpy as np
import pandas as pd
import pytest
import torch
from interrupts import interrupt_after_checkpoint
from train_helpers import TINY

from bvkit.errors import BvkitError
from bvkit.train import train
from bvkit.train.checkpoint import load_checkpoint, save_checkpoint
from bvkit.data.profiles import per_class_accuracy, split_accuracy
from bvkit.train.metrics import expert_usage_by_split


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "c.pt", model=model.state_dict(), optimizer=optimizer.state_dict(),
                           epoch=3, recipe={"name": "ce", "lr_milestones": [160, 180]})
    payload = load_checkpoint(path)
    assert payload["epoch"] == 3 and payload["recipe"]["name"] == "ce"
    assert torch.equal(payload["model"]["weight"], model.weight)
    restored = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(payload["optimizer"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", epoch=1)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


class _Evil:
    """Any class instance: loading it would need unpickling code, which weights_only refuses."""


def test_pickled_objects_and_foreign_files_are_refused(tmp_path):
    torch.save({"format": "bvkit-checkpoint-1", "obj": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(BvkitError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(BvkitError, match="not a bvkit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(BvkitError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_split_accuracy_is_the_mean_of_class_accuracies_and_none_when_empty():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    acc = per_class_accuracy(preds, labels, 4)
    np.testing.assert_allclose(acc[:3], [0.75, 0.5, 0.0])
    assert np.isnan(acc[3])  # no test sample of class 3
    counts = np.array([200, 150, 10, 5])  # many, many, few, few at the default 100 / 20
    result = split_accuracy(preds, labels, counts)
    assert result["all"] == pytest.approx(1.25 / 3)
    assert result["many"] == pytest.approx(0.625)
    assert result["few"] == 0.0
    assert result["medium"] is None
    moved = split_accuracy(preds, labels, counts, many=160, few=8)  # class 1 medium, class 2 too
    assert moved["many"] == 0.75 and moved["medium"] == pytest.approx(0.25) and moved["few"] is None
    with pytest.raises(BvkitError, match="few <= many"):
        split_accuracy(preds, labels, counts, many=10, few=50)


def test_expert_usage_shares_per_split():
    labels = np.array([0, 0, 1, 1])
    used = np.array([1, 1, 3, 2])
    usage = expert_usage_by_split(used, labels, np.array(["many", "few"]), 3)
    assert usage["all"] == [0.5, 0.25, 0.25]
    assert usage["many"] == [1.0, 0.0, 0.0]
    assert usage["few"] == [0.0, 0.5, 0.5]
    assert usage["medium"] is None


def test_a_run_in_progress_says_its_epoch_and_a_finished_one_does_not(tmp_path, tiny_data, monkeypatch):
    from bvkit.train.progress import read_progress

    run = lambda: train("ce", tiny_data, out=tmp_path, device="cpu", epochs=3, **TINY)
    # Ctrl-C right after epoch 2's checkpoint: the progress file, written after each checkpoint, says 1
    interrupt_after_checkpoint(monkeypatch, run, stop=lambda content, count: count == 2)
    progress = read_progress(tmp_path)
    assert (progress["stage"], progress["epoch"], progress["epochs"]) == ("stage1", 1, 3)
    run()
    assert read_progress(tmp_path) is None
    assert pd.read_csv(tmp_path / "history.csv").iloc[0]["loss"] == pytest.approx(progress["loss"])
