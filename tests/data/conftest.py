"""Fixtures: official data releases in miniature, written by ``data_files.py``."""

from __future__ import annotations

import numpy as np
import pytest
from data_files import fake_images, planes, write_python2_pickle

from bvkit.data import make_long_tailed


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


@pytest.fixture(scope="session")
def synthetic_lt():
    return make_long_tailed("synthetic-lt", imbalance=100, seed=0)
