"""A fast stand-in for the trainer (``BVKIT_STUDY_RUNNER=fake_runner:train``): a numpy "model".

Its logits are the log class prior of the run's training subset plus a seeded signal on the
true class and seeded noise, so methods, subsets and seeds all change the predictions.
Environment knobs for the tests: ``FAKE_LOG`` (append one line per call), ``FAKE_SLEEP``
(seconds per run), ``FAKE_FAIL`` (a method that raises). A run reusing a stage one gets its
checkpoint's path (``stage_one``), logged with whether the file exists, and otherwise ignored.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=4)
def load_data(dataset, imbalance, profile, root, n_max=None):
    from bvkit.data import make_long_tailed

    return make_long_tailed(dataset, imbalance=imbalance, profile=profile, root=root, n_max=n_max)


def train_on_dask_worker(method, dataset, out, **kwargs):
    """The fake trainer, logging the process and thread it runs in (to tell Dask workers)."""
    import multiprocessing
    import threading

    where = {"process": multiprocessing.current_process().name, "thread": threading.current_thread().name}
    return train(method, dataset, out, _log=where, **kwargs)


def train(method, dataset, out, *, train_indices, seed=0, device="auto", overrides=None, recipe=None, imbalance=100.0,
          profile="exp", data_root=None, n_max=None, stage_one=None, keep_stage_one=False, _log=None):
    out = Path(out)
    if os.environ.get("FAKE_LOG"):
        with open(os.environ["FAKE_LOG"], "a") as log:
            log.write(json.dumps({"method": method, "seed": seed, "out": str(out), "pid": os.getpid(),
                                  "device": device, "n_train": len(train_indices), "stage_one": stage_one,
                                  "stage_one_exists": stage_one is not None and Path(stage_one).is_file(),
                                  "keep_stage_one": keep_stage_one, **(_log or {})}) + "\n")
    if method == os.environ.get("FAKE_FAIL"):
        raise RuntimeError(f"{method} diverged\nloss is nan")
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    data = load_data(dataset, imbalance, profile, data_root, n_max)
    labels = np.asarray(data.test.labels, dtype=np.int64)
    n_classes = len(data.class_names)
    counts = np.bincount(data.pool.labels[train_indices], minlength=n_classes)
    rng = np.random.default_rng([seed, sum(map(ord, method)), int(counts.sum())])
    strength = 1.0 + 0.1 * ((overrides or {}).get("epochs") or 1)
    logits = np.log(counts + 1.0)[None, :] + rng.normal(size=(len(labels), n_classes))
    logits[np.arange(len(labels)), labels] += strength * rng.uniform(0.5, 1.5, size=len(labels))
    np.savez(out / "predictions.npz", labels=labels, logits=logits[None].astype(np.float32),
             train_counts=np.asarray(data.counts), class_names=np.asarray(data.class_names, dtype=str))
    hits = logits.argmax(1) == labels
    accuracy = float(np.mean([hits[labels == c].mean() for c in range(n_classes)]))
    metrics = {"method": method, "seed": seed, "accuracy": {"all": accuracy, "many": accuracy, "medium": None,
                                                            "few": accuracy},
               "mflops": 1.5, "seconds": 0.01, "epochs": (overrides or {}).get("epochs"),
               "train_accuracy": 0.9, "val_accuracy": accuracy}
    if method.startswith("ride"):
        metrics["expert_usage"] = {"all": [0.5, 0.5], "many": [0.7, 0.3], "medium": None, "few": [0.2, 0.8]}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "checkpoint.pt").write_bytes(rng.bytes(64))
    return metrics
