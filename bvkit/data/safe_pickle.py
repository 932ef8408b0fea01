"""Read CIFAR's pickled batches without letting a crafted file run code.

``pickle.load`` calls whatever a file names; this unpickler resolves only the few globals
that pickled numpy arrays and Python-2 era byte strings need, so a file whose reduce names
``os.system`` (or anything else) fails with BvkitError before anything runs.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from bvkit.errors import BvkitError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes as codecs.encode(str, "latin1") in protocols < 3.
    ("_codecs", "encode"): codecs.encode,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "bytearray"): bytearray,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy array reconstruction and builtin containers."""

    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        return target


def load_pickle(path: str | Path):
    """Load one pickle file with latin1 string decoding (Python-2 CIFAR files) and the
    restricted unpickler; any problem becomes a BvkitError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise BvkitError(f"missing data file {path}") from None
    except Exception as err:  # noqa: BLE001 - a corrupt or hostile file fails in many ways
        raise BvkitError(f"cannot read {path} as a CIFAR pickle: {err}") from None
