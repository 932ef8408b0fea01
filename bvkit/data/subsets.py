"""Stage 1 of a study: the D training subsets, as index arrays into ``data.pool``
(the protocols: ``docs/subsets.md``).

Every scheme is ``(data, n_subsets, seed) -> list of int64 index arrays``. Subset ``d`` depends
only on ``(seed, d)``, not on ``n_subsets`` (except for ``split``, whose parts are defined
together), so asking for more subsets extends a study without changing the earlier ones.
"""

from __future__ import annotations

import inspect
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bvkit.atomic import write_if_changed
from bvkit.errors import BvkitError
from bvkit.registry import Registry


def _rng(seed: int, d: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(d)])


def _lt_by_class(data) -> list[np.ndarray]:
    """The long-tailed training indices grouped by class (label order)."""
    labels = data.pool.labels[data.train_indices]
    return [data.train_indices[labels == c] for c in range(data.n_classes)]


def redraw_subsets(data, n_subsets: int, seed: int = 0) -> list[np.ndarray]:
    """Fresh long-tailed draws from the balanced pool with the same per-class counts.

    A class whose count equals its pool size is the same in every draw.
    """
    by_class = [np.flatnonzero(data.pool.labels == c) for c in range(data.n_classes)]
    subsets = []
    for d in range(n_subsets):
        rng = _rng(seed, d)
        subsets.append(np.concatenate(
            [rng.permutation(idx)[:n_c] for idx, n_c in zip(by_class, data.counts)]))
    return subsets


def bootstrap_subsets(data, n_subsets: int, seed: int = 0) -> list[np.ndarray]:
    """Per class, resample the long-tailed set with replacement, keeping the counts."""
    by_class = _lt_by_class(data)
    subsets = []
    for d in range(n_subsets):
        rng = _rng(seed, d)
        subsets.append(np.concatenate([rng.choice(idx, size=len(idx)) for idx in by_class]))
    return subsets


def split_subsets(data, n_subsets: int, seed: int = 0) -> list[np.ndarray]:
    """``n_subsets`` disjoint stratified parts of the long-tailed set (Yang et al.'s protocol).

    Each class is shuffled and dealt round-robin, so part ``d`` gets ``floor`` or ``ceil`` of
    ``n_c / D`` images of class ``c``. A class with fewer than D images appears in only
    ``n_c`` of the parts (the deal starts where the previous class stopped, so the parts
    stay within one image of each other in size); the others lack that class entirely.
    """
    rng = _rng(seed, 0)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_subsets)]
    start = 0
    for idx in _lt_by_class(data):
        shuffled = rng.permutation(idx)
        owner = (start + np.arange(len(shuffled))) % n_subsets
        for d in range(n_subsets):
            parts[d].append(shuffled[owner == d])
        start = (start + len(shuffled)) % n_subsets
    return [np.concatenate(p) for p in parts]


def subsample_subsets(data, n_subsets: int, seed: int = 0, fraction: float = 0.5) -> list[np.ndarray]:
    """Per class, a fraction of the long-tailed set without replacement (at least one image)."""
    if not 0 < fraction <= 1:
        raise BvkitError(f"subsample fraction must be in (0, 1], got {fraction:g}")
    by_class = _lt_by_class(data)
    sizes = [max(1, round(fraction * len(idx))) for idx in by_class]
    subsets = []
    for d in range(n_subsets):
        rng = _rng(seed, d)
        subsets.append(np.concatenate(
            [rng.choice(idx, size=k, replace=False) for idx, k in zip(by_class, sizes)]))
    return subsets


SCHEMES: Registry[Callable[..., list[np.ndarray]]] = Registry("subset scheme")
SCHEMES.register("redraw", redraw_subsets)
SCHEMES.register("bootstrap", bootstrap_subsets)
SCHEMES.register("split", split_subsets)
SCHEMES.register("subsample", subsample_subsets)


def list_schemes(pattern: str = "*") -> list[str]:
    return SCHEMES.names(pattern)


def sample_subsets(scheme: str, data, n_subsets: int, seed: int = 0, **kw) -> list[np.ndarray]:
    """Draw ``n_subsets`` training subsets of a ``LongTailed`` set; indices into ``data.pool``."""
    draw = SCHEMES.get(scheme)
    if int(n_subsets) < 1:
        raise BvkitError(f"number of subsets must be >= 1, got {n_subsets}")
    accepted = inspect.signature(draw).parameters
    unknown = [k for k in kw if k not in accepted]
    if unknown:
        raise BvkitError(f"subset scheme {scheme!r} takes no option {unknown[0]!r}")
    return [s.astype(np.int64) for s in draw(data, int(n_subsets), int(seed), **kw)]


def save_subsets(path: str | os.PathLike, subsets) -> bool:
    """Write subsets to an ``.npz`` file (``subset_0``, ``subset_1``, ...; ``.npz`` is appended
    to a name without it, as ``np.savez`` does): the one writer of ``subsets.npz``, a study's
    included. Atomic (``bvkit.atomic``), and only when the file does not already hold exactly
    these bytes (a study's rerun leaves it untouched); returns whether it wrote."""
    path = Path(path)
    if not path.name.endswith(".npz"):
        path = path.with_name(path.name + ".npz")
    buffer = io.BytesIO()
    np.savez(buffer, **{f"subset_{d}": np.asarray(s, dtype=np.int64) for d, s in enumerate(subsets)})
    return write_if_changed(path, buffer.getvalue())


def load_subsets(path: str | os.PathLike) -> list[np.ndarray]:
    """Read subsets written by ``save_subsets``, in their original order, as int64 arrays: the
    one reader of ``subsets.npz``, a study's included."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = [k for k in archive.files if k.startswith("subset_")]
            order = sorted(keys, key=lambda k: int(k.split("_", 1)[1]))
            if not order or len(order) != len(archive.files):
                raise BvkitError(f"{path} does not hold subsets (keys {archive.files[:5]})")
            return [archive[k].astype(np.int64) for k in order]
    except FileNotFoundError:
        raise BvkitError(f"missing subsets file {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise BvkitError(f"cannot read subsets file {path}: {err}") from None


def holdout_indices(data, per_class: int, seed: int = 0, skip: int = 0) -> np.ndarray:
    """Up to ``per_class`` pool images per class outside the long-tailed training set, for
    validation (never the test set). A class whose count equals its pool size (CIFAR-100-LT's
    head class) has none to give.

    Each class's unused images are put in one seeded random order and images ``skip`` to
    ``skip + per_class`` of it are taken, so draws with the same seed and consecutive ranges
    are disjoint samples of the same unused pool: ``skip=0`` is the validation set, ``skip``
    = its size a second set that checks it (``bvkit.train.evaluation.validation_check``)."""
    if per_class < 0 or skip < 0:
        raise BvkitError(f"per_class and skip must be >= 0, got {per_class} and {skip}")
    rng = np.random.default_rng([int(seed), 1 << 20])
    free = np.ones(len(data.pool), dtype=bool)
    free[data.train_indices] = False
    chosen = []
    for c in range(data.n_classes):
        idx = np.flatnonzero(free & (data.pool.labels == c))
        chosen.append(np.sort(rng.permutation(idx)[skip:skip + per_class]))
    return np.concatenate(chosen).astype(np.int64)
