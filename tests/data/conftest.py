"""Writers for data files in the exact official formats, so every reader is tested offline."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from bvkit.data import make_long_tailed


class Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 byte strings (BINSTRING), like the official CIFAR
    release, which Python 3 reads back with ``encoding="latin1"``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def write_python2_pickle(obj, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x, which wrote the official files, named the module numpy.core.multiarray
    path.write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def fake_images(n: int, seed: int, shape=(32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def planes(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> CIFAR's (N, 3072) rows of R, G, B planes."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


@pytest.fixture
def cifar10_root(tmp_path):
    """A CIFAR-10 python release in miniature (6 images per class per training batch)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    truth = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = np.repeat(np.arange(10), 6 if name != "test_batch" else 3)
        images = fake_images(len(labels), seed=b)
        truth[name] = (images, labels)
        write_python2_pickle({
            "batch_label": f"batch {name}",
            "labels": [int(v) for v in labels],
            "data": planes(images),
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
        }, folder / name)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_python2_pickle({"num_cases_per_batch": 60, "label_names": names, "num_vis": 3072},
                         folder / "batches.meta")
    return tmp_path, truth, names


@pytest.fixture
def cifar100_root(tmp_path):
    """A CIFAR-100 python release in miniature (train 3 per class, test 1 per class)."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    truth = {}
    for seed, (name, per_class) in enumerate([("train", 3), ("test", 1)]):
        fine = np.random.default_rng(seed).permutation(np.repeat(np.arange(100), per_class))
        images = fake_images(len(fine), seed=10 + seed)
        truth[name] = (images, fine)
        write_python2_pickle({
            "filenames": [f"f{i}.png" for i in range(len(fine))],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": [int(v) for v in fine],
            "coarse_labels": [int(v) // 5 for v in fine],
            "data": planes(images),
        }, folder / name)
    names = [f"fine{c:02d}" for c in range(100)]
    write_python2_pickle({"fine_label_names": names,
                          "coarse_label_names": [f"coarse{c}" for c in range(20)]},
                         folder / "meta")
    return tmp_path, truth, names


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


@pytest.fixture(scope="session")
def synthetic_lt():
    return make_long_tailed("synthetic-lt", imbalance=100, seed=0)
