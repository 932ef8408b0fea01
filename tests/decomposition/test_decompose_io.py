"""Prediction files and the chunked pass: npz == npy directory == in memory, chunk invariance."""

import mmap
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from decompose_helpers import random_set

import bvkit.decomposition as bd
from bvkit.decomposition.chunk_reader import ChunkReader
from bvkit.errors import BvkitError


def _frames_equal(a, b, **kw):
    for attr in ("per_sample", "per_class", "per_split"):
        x, y = getattr(a, attr), getattr(b, attr)
        pd.testing.assert_frame_equal(x.drop(columns="method"), y.drop(columns="method"), **kw)


def test_chunked_equals_unchunked_and_threads_agree():
    labels, logits, counts = random_set(n_samples=301, n_classes=12)
    whole = bd.decompose(labels, logits=logits, train_counts=counts, loss="all",
                         chunk_size=301, n_jobs=1)
    for chunk_size, jobs in ((1, 1), (7, 2), (64, 3)):
        part = bd.decompose(labels, logits=logits, train_counts=counts, loss="all",
                            chunk_size=chunk_size, n_jobs=jobs)
        _frames_equal(whole, part)
    preds = logits.argmax(-1)
    whole = bd.decompose(labels, preds=preds, loss=["squared", "zero-one"], chunk_size=301)
    _frames_equal(whole, bd.decompose(labels, preds=preds, loss=["squared", "zero-one"],
                                      chunk_size=5, n_jobs=2))


def test_npz_equals_npy_directory_equals_memory(tmp_path):
    labels, logits, counts = random_set(n_samples=150)
    names = [f"class {i}" for i in range(8)]
    npz = bd.save_predictions(tmp_path / "ce.npz", labels, logits=logits, train_counts=counts,
                              class_names=names)
    folder = bd.save_predictions(tmp_path / "ce_dir", labels, logits=logits, train_counts=counts,
                                 class_names=names)
    in_memory = bd.decompose(labels, logits=logits, train_counts=counts, class_names=names,
                             loss="all")
    for path in (npz, folder):
        pset = bd.load_predictions(path)
        assert pset.kind == "logits" and pset.class_names.dtype.kind == "U"
        assert list(pset.class_names) == names
        _frames_equal(in_memory, bd.decompose_file(path, loss="all"))


def test_uncompressed_npz_and_npy_are_memory_mapped(tmp_path):
    labels, logits, _ = random_set(n_samples=40)
    for path in (tmp_path / "a.npz", tmp_path / "b"):
        bd.save_predictions(path, labels, logits=logits.astype(np.float16))
        scores = bd.load_predictions(path).scores
        base = scores
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, mmap.mmap), path
        np.testing.assert_array_equal(scores, logits.astype(np.float16))
    np.savez_compressed(tmp_path / "c.npz", labels=labels, logits=logits)
    compressed = bd.load_predictions(tmp_path / "c.npz")
    np.testing.assert_array_equal(compressed.scores, logits)


def test_float16_memmap_path_matches_float32_in_memory(tmp_path):
    labels, logits, counts = random_set(n_samples=120, n_classes=30)
    half = logits.astype(np.float16)
    bd.save_predictions(tmp_path / "half", labels, logits=half, train_counts=counts)
    mapped = bd.decompose_file(tmp_path / "half", loss="all", chunk_size=13, n_jobs=2)
    exact = bd.decompose(labels, logits=half.astype(np.float32), train_counts=counts, loss="all")
    _frames_equal(exact, mapped, rtol=1e-6, atol=1e-7)


def _rss_file_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("how", ["memmap", "mmap-view"])
def test_chunked_reads_keep_the_file_out_of_resident_memory(tmp_path, how):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 1500, 1000)).astype(np.float32)  # 24 MB
    np.save(tmp_path / "x.npy", data)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    if how == "mmap-view":  # a mapped array that is not an np.memmap: read through the map
        with open(tmp_path / "x.npy", "rb") as f:
            raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mapped = np.ndarray(data.shape, data.dtype, buffer=raw, offset=mapped.offset)
    before = _rss_file_mb()
    with ChunkReader(mapped) as reader:
        assert bool(reader._fds) == (how == "memmap")
        for start in range(0, 1500, 20):
            np.testing.assert_array_equal(reader.float32(start, start + 20),
                                          data[:, start:start + 20])
    assert _rss_file_mb() - before < 4, "the file's pages stayed resident"


def test_reader_handles_views_of_a_memmap(tmp_path):
    labels, logits, _ = random_set(n_samples=40)
    np.save(tmp_path / "l.npy", logits.astype(np.float16))
    mapped = np.load(tmp_path / "l.npy", mmap_mode="r")
    for view in (mapped[1:4], mapped[:, 10:30], mapped[::2], mapped[:, :, 2:]):
        with ChunkReader(view) as reader:
            np.testing.assert_array_equal(reader.float32(3, 9),
                                          np.asarray(view[:, 3:9], dtype=np.float32))


def test_find_prediction_sets_in_a_study_directory(tmp_path):
    labels, logits, _ = random_set(n_samples=20)
    study = tmp_path / "study"
    bd.save_predictions(study / "predictions" / "ride.npz", labels, logits=logits)
    bd.save_predictions(study / "predictions" / "ce", labels, logits=logits)
    (study / "predictions" / "notes.txt").write_text("not a prediction set")
    found = bd.find_prediction_sets(study)
    assert [bd.method_name(p) for p in found] == ["ce", "ride"]
    assert bd.find_prediction_sets(study / "predictions") == found
    assert bd.find_prediction_sets(study / "predictions" / "ce") == [study / "predictions" / "ce"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BvkitError, match="no prediction sets"):
        bd.find_prediction_sets(tmp_path / "empty")


def test_save_predictions_overwrites_directory_cleanly(tmp_path):
    labels, logits, _ = random_set(n_samples=20)
    bd.save_predictions(tmp_path / "p", labels, logits=logits)
    bd.save_predictions(tmp_path / "p", labels, preds=logits.argmax(-1))
    assert bd.load_predictions(tmp_path / "p").kind == "preds"
    assert not list(tmp_path.glob("p/.*tmp"))


def test_pickled_object_array_is_refused(tmp_path):
    labels, logits, _ = random_set(n_samples=10)
    np.savez(tmp_path / "obj.npz", labels=labels, logits=logits,
             class_names=np.array([object()] * 8, dtype=object))
    with pytest.raises(BvkitError, match="pickled object array"):
        bd.load_predictions(tmp_path / "obj.npz")
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "labels.npy", labels)
    np.save(tmp_path / "d" / "logits.npy", np.array([None, 1], dtype=object))
    with pytest.raises(BvkitError, match="pickled object array"):
        bd.load_predictions(tmp_path / "d")


def test_stored_member_layout_is_what_we_map(tmp_path):
    labels, logits, _ = random_set(n_samples=10)
    path = bd.save_predictions(tmp_path / "x.npz", labels, logits=logits)
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())


def test_decompose_sets_stacks_each_set_decomposed_alone(tmp_path):
    paths = []
    for seed, name in ((0, "ce"), (1, "ride")):
        labels, logits, counts = random_set(seed=seed, n_samples=120)
        paths.append(bd.save_predictions(tmp_path / f"{name}.npz", labels, logits=logits, train_counts=counts))
    options = dict(loss="all", bootstrap=20, seed=3, many=150, few=50, estimator="population")
    stacked = bd.decompose_sets([paths[0], bd.load_predictions(paths[1])], **options)
    assert stacked.methods == ["ce", "ride"]
    for path, method in zip(paths, ("ce", "ride")):
        alone = bd.decompose_file(path, **options)
        for attr in ("per_sample", "per_class", "per_split", "per_model"):
            part = getattr(stacked, attr)
            pd.testing.assert_frame_equal(part[part["method"] == method].reset_index(drop=True),
                                          getattr(alone, attr))
    assert bd.decompose_sets(paths[:1], name="CE", loss="squared").methods == ["CE"]
    with pytest.raises(BvkitError, match="no decompositions"):
        bd.decompose_sets([])
