import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from data_files import fake_images, planes, write_idx, write_python2_pickle

from bvkit.data import data_root, list_sources, load_source, read_idx, sources
from bvkit.data.safe_pickle import load_pickle
from bvkit.errors import BvkitError

REAL_CIFAR10 = data_root() / "cifar-10-batches-py"
REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_sources_are_registered():
    assert list_sources() == ["cifar10", "cifar100", "fashion-mnist", "synthetic"]
    with pytest.raises(BvkitError, match="unknown data source 'svhn'"):
        load_source("svhn")


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("BVKIT_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("BVKIT_DATA")
    assert data_root().name == "bvkit"


def test_cifar10_official_layout(cifar10_root):
    root, truth, names = cifar10_root
    train = load_source("cifar10", root=root)
    expected = np.concatenate([truth[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert train.images.shape == (300, 32, 32, 3) and train.images.dtype == np.uint8
    assert np.array_equal(train.images, expected)
    assert train.labels.dtype == np.int64
    assert np.array_equal(train.class_counts(), [30] * 10)
    assert train.class_names == names
    test = load_source("cifar10", root=root, train=False)
    assert np.array_equal(test.images, truth["test_batch"][0])
    assert np.array_equal(test.labels, truth["test_batch"][1])


def test_cifar10_pixels_are_rgb_planes(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 1] = (255, 128, 7)  # row 0, column 1
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_python2_pickle({"data": planes(image), "labels": [3]}, folder / name)
    write_python2_pickle({"label_names": [str(c) for c in range(10)]}, folder / "batches.meta")
    test = load_source("cifar10", root=tmp_path, train=False)
    assert tuple(test.images[0, 0, 1]) == (255, 128, 7)
    assert test.images[0].sum() == 255 + 128 + 7


def test_cifar100_official_layout(cifar100_root, monkeypatch):
    root, truth, names = cifar100_root
    monkeypatch.setenv("BVKIT_DATA", str(root))
    train = load_source("cifar100")
    assert train.images.shape == (300, 32, 32, 3)
    assert np.array_equal(train.images, truth["train"][0])
    assert np.array_equal(train.labels, truth["train"][1])  # fine labels, not coarse
    assert train.class_names == names
    test = load_source("cifar100", train=False)
    assert np.array_equal(test.labels, truth["test"][1]) and len(test) == 100


def test_cifar_with_bytes_keys(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images = fake_images(100, 0)
    for name in ("train", "test"):
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": planes(images), b"fine_labels": list(range(100))}, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, handle)
    data = load_source("cifar100", root=tmp_path)
    assert data.class_names[:2] == ["c0", "c1"]
    assert np.array_equal(data.images, images)


def test_missing_cifar_names_the_file(tmp_path):
    with pytest.raises(BvkitError, match="cifar100 not found: missing .*cifar-100-python/train"):
        load_source("cifar100", root=tmp_path)


def test_cifar_md5_is_opt_in(cifar10_root, monkeypatch):
    root, _, _ = cifar10_root
    load_source("cifar10", root=root)  # generated files: no md5 asked, none checked
    with pytest.raises(BvkitError, match="md5 mismatch for .*data_batch_1: expected c99cafc1"):
        load_source("cifar10", root=root, check_md5=True)
    folder = root / "cifar-10-batches-py"
    layout = sources.CIFAR["cifar10"]
    patched = sources.CifarLayout(**{
        **layout.__dict__,
        "train_files": tuple((f, sources.md5sum(folder / f)) for f, _ in layout.train_files),
        "meta_file": ("batches.meta", sources.md5sum(folder / "batches.meta")),
    })
    monkeypatch.setitem(sources.CIFAR, "cifar10", patched)
    assert len(load_source("cifar10", root=root, check_md5=True)) == 300


def test_failed_download_is_one_line_error(tmp_path, monkeypatch):
    calls = []

    def offline(root, download, train):
        calls.append((root, download, train))
        raise OSError("<urlopen error [Errno -3] Temporary failure\n in name resolution>")

    # a stand-in torchvision (importing the real one costs seconds): the download is offline
    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR10=offline)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    with pytest.raises(BvkitError) as info:
        load_source("cifar10", root=tmp_path, download=True)
    assert "could not download CIFAR10" in str(info.value) and "\n" not in str(info.value)
    assert calls == [(str(tmp_path), True, True)]


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    with pytest.raises(BvkitError, match="not allowed"):
        load_pickle(evil)
    assert not marker.exists()
    # the same payload as a CIFAR batch is refused by the source too
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(evil.read_bytes())
    with pytest.raises(BvkitError, match="posix.system|os.system|nt.system"):
        load_source("cifar10", root=tmp_path)
    assert not marker.exists()


def test_corrupt_pickle_is_bad_input(tmp_path):
    path = tmp_path / "broken"
    path.write_bytes(b"\x80\x02}q\x00(U\x04data")
    with pytest.raises(BvkitError, match="cannot read .*broken"):
        load_pickle(path)


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_idx(tmp_path, gzipped, layout):
    folder = tmp_path / layout
    folder.mkdir(parents=True)
    suffix = ".gz" if gzipped else ""
    rng = np.random.default_rng(0)
    truth = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        truth[prefix] = images, labels
    train = load_source("fashion-mnist", root=tmp_path)
    assert train.images.shape == (30, 28, 28, 1) and train.images.dtype == np.uint8
    assert np.array_equal(train.images[..., 0], truth["train"][0])
    assert np.array_equal(train.labels, truth["train"][1])
    assert train.class_names[0] == "T-shirt/top" and train.n_classes == 10
    assert len(load_source("fashion-mnist", root=tmp_path, train=False)) == 10


def test_bad_idx_file(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(BvkitError, match="idx header says shape"):
        read_idx(path)
    path.write_bytes(b"\x1f\x8b junk")
    with pytest.raises(BvkitError, match="not an unsigned-byte idx"):
        read_idx(path)


def test_missing_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(BvkitError, match="fashion-mnist not found"):
        load_source("fashion-mnist", root=tmp_path)


def test_synthetic_is_seeded_and_balanced():
    train = load_source("synthetic")
    test = load_source("synthetic", train=False)
    assert train.images.shape == (5000, 32, 32, 3) and train.images.dtype == np.uint8
    assert np.array_equal(train.class_counts(), [500] * 10)
    assert np.array_equal(test.class_counts(), [100] * 10)
    assert np.array_equal(load_source("synthetic", train=False).images, test.images)
    assert not np.array_equal(train.images[:1000], test.images)
    other_world = load_source("synthetic", train=False, world_seed=1)
    assert not np.array_equal(other_world.images, test.images)
    assert 60 < train.images.mean() < 200 and train.images.std() > 20


@pytest.mark.skipif(not REAL_CIFAR10.is_dir(), reason="no CIFAR-10 copy in $BVKIT_DATA")
def test_real_cifar10():
    train = load_source("cifar10")
    assert train.images.shape == (50000, 32, 32, 3)
    assert np.array_equal(train.class_counts(), [5000] * 10)
    assert train.class_names[0] == "airplane"
    assert abs(train.images[..., 0].mean() - 125.3) < 1.0
    assert len(load_source("cifar10", train=False)) == 10000


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.setenv("BVKIT_DATA", str(tmp_path))  # nothing there: falls back to the system copy
    train = load_source("fashion-mnist")
    assert train.images.shape == (60000, 28, 28, 1)
    assert np.array_equal(train.class_counts(), [6000] * 10)
    assert len(load_source("fashion-mnist", train=False)) == 10000
