import os
import sys
from pathlib import Path

import pytest

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
    """``interrupt_after_checkpoint`` as a fixture: ``from conftest import`` would get whichever
    test folder's conftest module was imported first (tests/train's undoes every patch)."""
    return interrupt_after_checkpoint


def interrupt_after_checkpoint(monkeypatch, run, stop=lambda content, count: count == 1):
    """Run ``run()`` and stop it as Ctrl-C would, right after the checkpoint for which
    ``stop(content, count)`` holds (``count`` numbers the checkpoints written, from 1).
    tests/train's helper (conftest modules of two test folders cannot import each other),
    undoing only its own patch."""
    from bvkit.train import loop

    real_save = loop.save_checkpoint
    count = 0

    def save_then_stop(path, **content):
        nonlocal count
        real_save(path, **content)
        count += 1
        if stop(content, count):
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
