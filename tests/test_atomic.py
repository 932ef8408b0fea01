"""bvkit.atomic: the one atomic file write and its fsync policy."""

import os

import pytest

from bvkit import atomic


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    assert atomic.atomic_write_text(path, "new") == path
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert atomic.write_if_changed(path, b"new") is False and atomic.write_if_changed(path, b"newer") is True
    assert path.read_bytes() == b"newer"


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"epoch 3")

    def write(handle):
        handle.write(b"half of epoch 4")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(path, write)
    assert path.read_bytes() == b"epoch 3" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_the_temporary_is_a_marked_sibling(tmp_path):
    tmp = atomic.temp_name(tmp_path / "CE.npz")
    assert tmp.parent == tmp_path and tmp.name.startswith("CE.npz" + atomic.TMP_MARK)
    assert tmp != atomic.temp_name(tmp_path / "CE.npz")


@pytest.mark.parametrize("durable, syncs", [(True, 2), (False, 0)])
def test_durable_writes_sync_the_file_and_its_directory(tmp_path, monkeypatch, durable, syncs):
    calls = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    atomic.atomic_write_bytes(tmp_path / "progress.json", b"{}", durable=durable)
    assert len(calls) == syncs and (tmp_path / "progress.json").read_bytes() == b"{}"
