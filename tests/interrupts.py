"""Stopping a training run as Ctrl-C would, for the resume tests of tests/train and tests/study
(on the import path through the pytest setting ``pythonpath``)."""

import pytest


def interrupt_after_checkpoint(monkeypatch, run, stop=lambda content, count: count == 1):
    """Run ``run()`` and stop it as Ctrl-C would, right after the checkpoint for which
    ``stop(content, count)`` holds (``count`` numbers the checkpoints written, from 1); the
    test's other patches stay."""
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
