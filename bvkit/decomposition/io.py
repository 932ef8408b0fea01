"""Prediction files: a ``.npz``, or a directory of ``.npy`` files read memory-mapped.

A prediction set holds ``labels (N,)`` int and exactly one of ``logits (D, N, C)``, ``probs (D,
N, C)`` or ``preds (D, N)`` int, optionally ``train_counts (C,)`` int and ``class_names (C,)``
(a unicode array) and ``expert_logits (D, M, N, C)`` (multi-expert models) with, for a model
combining its experts with learned weights, ``expert_weights (D, M)``. Everything is read with ``allow_pickle=False``.

Scale: the score array of a directory (``logits.npy``...) and of an *uncompressed* ``.npz``
(``np.savez``, what :func:`save_predictions` writes) is memory-mapped, so
:func:`bvkit.decomposition.decompose` reads it chunk by chunk in bounded memory. A compressed
``.npz`` (``np.savez_compressed``) has to be decompressed whole into memory: fine for CIFAR-size
studies, use a directory of ``.npy`` for iNaturalist-size ones.

A study directory holds one prediction set per method as ``predictions/<method>.npz`` or
``predictions/<method>/``; :func:`find_prediction_sets` lists them.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bvkit.errors import BvkitError
from bvkit.predictions import OPTIONAL_KEYS, SCORE_KEYS, save_predictions  # noqa: F401  (the one writer)

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass
class PredictionSet:
    """One method's predictions on one test set, as read from disk (scores maybe mapped)."""

    name: str
    labels: np.ndarray
    kind: str  # "logits" | "probs" | "preds"
    scores: np.ndarray
    train_counts: np.ndarray | None = None
    class_names: np.ndarray | None = None
    path: Path | None = None
    expert_logits: np.ndarray | None = None  # (D, M, N, C): a multi-expert model's experts, memory-mapped
    expert_weights: np.ndarray | None = None  # (D, M): the weights its logits combine them with; None: the mean

    def arrays(self) -> dict:
        """Keyword arguments for :func:`bvkit.decomposition.decompose`."""
        return {"labels": self.labels, self.kind: self.scores,
                "train_counts": self.train_counts, "class_names": self.class_names,
                "expert_logits": self.expert_logits, "expert_weights": self.expert_weights}


def is_prediction_set(path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix == ".npz") or (path / "labels.npy").is_file()


def find_prediction_sets(path) -> list[Path]:
    """Prediction sets under ``path``, sorted by name.

    ``path`` may be a prediction set (``.npz`` file or directory with ``labels.npy``), a study
    directory (``predictions/<method>.npz`` or ``predictions/<method>/``), or a directory that
    directly holds such sets.
    """
    path = Path(path)
    if not path.exists():
        raise BvkitError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    if is_prediction_set(path):
        return [path]
    folder = path / "predictions" if (path / "predictions").is_dir() else path
    sets = sorted((p for p in folder.iterdir() if is_prediction_set(p)), key=method_name)
    if not sets:
        raise BvkitError(
            f"{path}: no prediction sets found (expected a .npz, a directory with labels.npy, "
            f"or predictions/<method>.npz / predictions/<method>/)"
        )
    return sets


def method_name(path) -> str:
    """A prediction set's method name: its file or directory stem."""
    path = Path(path)
    return path.stem if path.suffix == ".npz" else path.name


def load_predictions(path, name=None) -> PredictionSet:
    """Read a prediction set; its score array is memory-mapped where the format allows."""
    path = Path(path)
    if not path.exists():
        raise BvkitError(f"{path}: no such file or directory")
    arrays = _read_directory(path) if path.is_dir() else _read_npz(path)
    scores = [k for k in SCORE_KEYS if k in arrays]
    if "labels" not in arrays:
        raise BvkitError(f"{path}: no 'labels' array")
    if len(scores) != 1:
        found = ", ".join(scores) or "none"
        raise BvkitError(f"{path}: needs exactly one of logits, probs or preds (found {found})")
    kind = scores[0]
    names = arrays.get("class_names")
    if names is not None and names.dtype.kind not in "US":
        raise BvkitError(f"{path}: class_names must be a string array, got dtype {names.dtype}")
    return PredictionSet(
        name=name or method_name(path), labels=arrays["labels"], kind=kind,
        scores=arrays[kind], train_counts=arrays.get("train_counts"),
        class_names=names, path=path, expert_logits=arrays.get("expert_logits"),
        expert_weights=arrays.get("expert_weights"))


def _read_directory(path: Path) -> dict:
    if not (path / "labels.npy").is_file():
        raise BvkitError(f"{path}: not a prediction set (no labels.npy)")
    arrays = {}
    for key in ("labels", *SCORE_KEYS, *OPTIONAL_KEYS):
        file = path / f"{key}.npy"
        if file.is_file():
            mapped = key in (*SCORE_KEYS, "expert_logits")
            arrays[key] = _load_npy(file, mmap_mode="r" if mapped else None)
    return arrays


def _load_npy(file: Path, mmap_mode=None) -> np.ndarray:
    if _magic(file, len(_NPY_MAGIC)) != _NPY_MAGIC:
        raise BvkitError(f"{file}: not a .npy file")
    try:
        arr = np.load(file, mmap_mode=mmap_mode, allow_pickle=False)
    except ValueError as err:
        if "object" in str(err).lower() or "pickle" in str(err).lower():
            raise BvkitError(f"{file}: holds a pickled object array (refused: "
                             f"allow_pickle=False)") from None
        raise BvkitError(f"{file}: unreadable .npy ({err})") from None
    except (OSError, EOFError) as err:
        raise BvkitError(f"{file}: unreadable .npy ({err})") from None
    return arr


def _magic(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as err:
        raise BvkitError(f"{path}: cannot read ({err.strerror or err})") from None


def _read_npz(path: Path) -> dict:
    magic = _magic(path, 4)
    if magic == _NPY_MAGIC[:4]:
        raise BvkitError(f"{path}: a single .npy array; a prediction set is a .npz or a "
                         f"directory of .npy files")
    if magic not in _ZIP_MAGIC:
        raise BvkitError(f"{path}: not a .npz file")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {Path(i.filename).stem: i for i in zf.infolist()
                     if i.filename.endswith(".npy")}
        arrays = {}
        with np.load(path, allow_pickle=False) as npz:
            for key in ("labels", *SCORE_KEYS, *OPTIONAL_KEYS):
                if key not in infos:
                    continue
                mapped = key in (*SCORE_KEYS, "expert_logits") and infos[key].compress_type == zipfile.ZIP_STORED
                arrays[key] = _map_member(path, infos[key]) if mapped else npz[key]
    except ValueError as err:
        if "object" in str(err).lower() or "pickle" in str(err).lower():
            raise BvkitError(f"{path}: holds a pickled object array (refused: "
                             f"allow_pickle=False)") from None
        raise BvkitError(f"{path}: unreadable .npz ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as err:
        raise BvkitError(f"{path}: not a valid .npz file ({err})") from None
    return arrays


def _map_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map an uncompressed .npz member in place (np.load ignores mmap_mode for .npz)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip local header for {info.filename}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # rare utf-8 header: read it the plain way
            with np.load(path, allow_pickle=False) as npz:
                return npz[Path(info.filename).stem]
        if dtype.hasobject:
            raise ValueError("object arrays cannot be loaded when allow_pickle=False")
        offset = f.tell()
        size = int(np.prod(shape)) * dtype.itemsize
        if offset + size > os.fstat(f.fileno()).st_size or size != info.file_size - (
                offset - info.header_offset - 30 - name_len - extra_len):
            raise ValueError(f"member {info.filename} is truncated")
    if size == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")
