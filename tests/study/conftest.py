import os
import sys

import pytest
from interrupts import interrupt_after_checkpoint
from study_helpers import HERE, REPO, SPEC

sys.path.insert(0, str(HERE))  # fake_runner, for in-process runs and (via PYTHONPATH) subprocesses


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
