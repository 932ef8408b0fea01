"""experiments/bench_epoch.py times every part of an epoch where the loop calls it, so a renamed
loop function or a part that stops being timed fails here, not at the next recording."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import bvkit.train.loop as loop
import bvkit.train.run as run_module

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_epoch.py"


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("_bench_epoch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_drop_epochs_are_timed_part_by_part_and_the_loop_is_restored(bench, tmp_path):
    originals = (loop.train_step, loop._train_epoch, run_module.train_phase)
    result = bench.measure("ce", {"model_kwargs.width": 4}, start=158, epochs=3, workdir=tmp_path,
                           dataset="synthetic-lt", imbalance=10, n_max=40, device="cpu")
    assert (loop.train_step, loop._train_epoch, run_module.train_phase) == originals
    epochs = result["per_epoch"]
    assert sorted(epochs) == [159, 160, 161]  # only the asked epochs were trained
    assert result["from_epoch"] == 160 and result["every"] == 20 and result["total"] == 200
    for parts in epochs.values():
        assert parts["step"] > 0 and parts["validation"] > 0 and parts["checkpoint"] > 0
        assert parts["loop"] >= 0
    assert epochs[159]["test watch"] == 0 and epochs[160]["test watch"] > 0 and epochs[161]["test watch"] > 0
    run = bench.full_run(result)
    # epochs 160..200 are scored, of which 160, 180, 200 are also snapshots; snapshots every 20 epochs
    assert run["test_forward_epochs"] == {"scored": 38, "snapshot": 10}
    assert run["seconds"]["validation"] == pytest.approx(200 * sum(e["validation"] for e in epochs.values()) / 3, abs=0.1)
    assert 0 < run["outside_step_share"] < 1
    assert (tmp_path / "ce" / "metrics.json").exists()  # the run finished as a run
