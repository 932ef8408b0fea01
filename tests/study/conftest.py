import os
import sys
from pathlib import Path

import pytest
from interrupts import interrupt_after_checkpoint

HERE = Path(__file__).parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))  # fake_runner, for in-process runs and (via PYTHONPATH) subprocesses

SPEC = """\
name = "tiny"

[data]
dataset = "synthetic-lt"
imbalance = 10.0

[subsets]
scheme = "redraw"
count = 3
seed = 0

[train]
epochs = 2
device = "cpu"

[[methods]]
name = "CE"
method = "ce"

[[methods]]
name = "RIDE-2"
method = "ride"
options = { model_kwargs = { num_experts = 2 } }
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """The fake trainer for this process and its subprocesses; returns the call log path."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("BVKIT_STUDY_RUNNER", "fake_runner:train")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]))
    return log


@pytest.fixture
def interrupt():
    """``interrupt_after_checkpoint`` (tests/interrupts.py) as a fixture."""
    return interrupt_after_checkpoint
