"""TensorBoard logging: the event files, read back by TensorBoard's own reader, hold exactly
history.csv's per-epoch values; per-split validation columns; resume; a missing package."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from interrupts import interrupt_after_checkpoint
from tensorboard.backend.event_processing import event_accumulator
from train_helpers import TINY

from bvkit.data.profiles import SPLITS, shot_splits
from bvkit.errors import BvkitError
from bvkit.train import train
from bvkit.train.tensorboard import SCALARS, TENSORBOARD_DIR


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    reader = event_accumulator.EventAccumulator(str(log_dir))
    reader.Reload()
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def history_scalars(history: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    expected = {}
    for column in SCALARS:
        for row in history.itertuples(index=False):
            value = getattr(row, column, None)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                expected.setdefault(f"{row.stage}/{column}", []).append((int(row.epoch), float(value)))
    return expected


def assert_same(scalars, expected):
    assert set(scalars) == set(expected)
    for tag, points in expected.items():
        got = scalars[tag]
        assert [step for step, _ in got] == [step for step, _ in points], tag
        # TensorBoard keeps a scalar as float32
        np.testing.assert_allclose([v for _, v in got], [v for _, v in points], rtol=1e-6, err_msg=tag)


def test_event_file_equals_history_csv(tmp_path, tiny_data):
    result = train("ce", tiny_data, out=tmp_path, device="cpu", epochs=3, tensorboard=True, **TINY)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    scalars = read_scalars(tmp_path / TENSORBOARD_DIR)
    splits = shot_splits(np.asarray(tiny_data.counts))
    sizes = {s: int(np.sum(splits == s)) for s in SPLITS}
    assert sizes["many"] == 0 and sizes["medium"] > 0 and sizes["few"] > 0  # 60 .. 6 images a class
    for column in ("loss", "accuracy", "lr", "images_per_s", "val_accuracy", "val_medium", "val_few"):
        assert f"stage1/{column}" in scalars
    assert "stage1/val_many" not in scalars and history["val_many"].isna().all()  # a split without classes
    assert_same(scalars, history_scalars(history))
    # the per-split validation columns are the class means of their splits: weighted by their
    # classes they give back the overall mean per-class accuracy
    last = history.iloc[-1]
    combined = sum(sizes[s] * last[f"val_{s}"] for s in SPLITS if sizes[s]) / sum(sizes.values())
    assert combined == pytest.approx(last["val_accuracy"], abs=1e-9)
    assert last["val_accuracy"] == pytest.approx(result.metrics["val_accuracy"], abs=1e-9)


def test_routed_ride_logs_expert_usage(tmp_path, tiny_data, ride_stage_one_dir):
    train("ride-ea", tiny_data, out=tmp_path, device="cpu", stage_one=ride_stage_one_dir / "checkpoint.pt",
          tensorboard=True, **{"routing.epochs": 2}, **TINY)
    history = pd.read_csv(tmp_path / "history.csv")
    scalars = read_scalars(tmp_path / TENSORBOARD_DIR)
    assert_same(scalars, history_scalars(history))
    experts = [value for _, value in scalars["routing/val_experts"]]
    assert len(experts) == 2 and all(1.0 <= value <= 3.0 for value in experts)
    assert "routing/accuracy" not in scalars  # the routing stage has no class logits of its own


def test_resumed_run_appends_without_repeating_epochs(tmp_path, tiny_data, monkeypatch):
    run = lambda: train("ce", tiny_data, out=tmp_path, device="cpu", epochs=3, tensorboard=True, **TINY)
    interrupt_after_checkpoint(monkeypatch, run)  # Ctrl-C after epoch 1
    assert [step for step, _ in read_scalars(tmp_path / TENSORBOARD_DIR)["stage1/loss"]] == [1]
    run()
    assert len(list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
    assert_same(read_scalars(tmp_path / TENSORBOARD_DIR), history_scalars(pd.read_csv(tmp_path / "history.csv")))


def test_no_event_files_unless_asked(tmp_path, tiny_data):
    train("ce", tiny_data, out=tmp_path, device="cpu", epochs=1, **TINY)
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_tensorboard_needs_an_output_directory(tiny_data):
    with pytest.raises(BvkitError, match="needs an output directory"):
        train("ce", tiny_data, device="cpu", epochs=1, tensorboard=True, **TINY)


def test_missing_package_is_one_line_exit_2(tmp_path):
    # torch.utils.tensorboard raises ImportError when the tensorboard package is absent
    code = ("import sys; sys.modules['torch.utils.tensorboard'] = None; from bvkit.cli import main; "
            f"sys.exit(main(['train', '--dataset', 'synthetic-lt', '--method', 'ce', '--epochs', '1', "
            f"'--tensorboard', '--out', {str(tmp_path / 'out')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "tensorboard" in lines[0] and "pip install 'bvkit[tensorboard]'" in lines[0]
    assert not (tmp_path / "out" / "history.csv").exists()

