import json
import subprocess
import sys

import numpy as np
import pytest

from bvkit.cli import main
from bvkit.methods import parse_overrides

TINY_ARGS = ["--dataset", "synthetic-lt", "--imbalance", "10", "--n-max", "40", "--model-width", "4",
             "--set", "model_kwargs.blocks=1", "--set", "val_per_class=5", "--device", "cpu"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--method", "ce", "--experts", "3"], "has no experts"),
        (["--method", "ce", "--data-root", "/no/such/dir"], "data root not found"),
        (["--method", "ce", "--set", "warp=9"], "unknown setting 'warp'"),
        (["--method", "ce", "--set", "novalue"], "KEY=VALUE"),
        (["--method", "ce", "--stage-one", "x.pt"], "two-stage method"),
        (["--method", "crt", "--stage-one", "/no/such.pt"], "stage-one checkpoint not found"),
        (["--method", "ride-distill"], "--teacher"),
        (["--method", "ce", "--epochs", "0"], "positive integer"),
        (["--method", "ce", "--precision", "fp16"], "precision must be one of auto, bf16, fp32, got 'fp16'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    code = main(["train", *TINY_ARGS, "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_set_values_are_parsed_as_literals():
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=[1, 2]", "e=ce", "f=none"]) == {
        "a": 1, "b": 0.5, "c": True, "d": [1, 2], "e": "ce", "f": None}


def test_bvkit_methods_lists_the_registry(capsys):
    assert main(["methods", "ride*"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["ride", "ride-distill", "ride-ea"]


@pytest.mark.slow
def test_bvkit_train_end_to_end_in_a_subprocess(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "bvkit.cli", "train", *TINY_ARGS, "--method", "ride", "--experts", "2", "--threads", "1",
               "--epochs", "1", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ride on synthetic-lt" in done.stdout and done.stderr == ""  # no progress bar off a terminal
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "ride" and metrics["epochs"] == 1
    with np.load(out / "predictions.npz") as npz:
        assert npz["logits"].ndim == 3 and npz["logits"].shape[0] == 1
    bad = subprocess.run([sys.executable, "-m", "bvkit.cli", "train", *TINY_ARGS, "--method", "nope",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
