"""Image sources: CIFAR-10/100 (python layout), Fashion-MNIST (idx files), synthetic.

Every source returns an ``ImageSet`` (uint8 images in native size, int64 labels, class names).
Files live under a data root: the ``root`` argument (``--data-root``), else ``$BVKIT_DATA``,
else the user cache dir ("bvkit"). Nothing is downloaded unless ``download=True`` (or
``fetch_cifar``, behind ``bvkit data fetch``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from bvkit.data.imageset import ImageSet
from bvkit.data.safe_pickle import load_pickle
from bvkit.data.synthetic import check_look, make_synthetic
from bvkit.errors import BvkitError
from bvkit.registry import Registry

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$BVKIT_DATA``, else the user cache dir."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("BVKIT_DATA"):
        return Path(os.environ["BVKIT_DATA"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bvkit"))


SOURCES: Registry[Callable[..., ImageSet]] = Registry("data source")


def register_source(name: str, *, overwrite: bool = False):
    """Decorator: make ``fn(root, train, download, check_md5, **options)`` a named source."""
    return SOURCES.decorator(name, overwrite=overwrite)


def list_sources(pattern: str = "*") -> list[str]:
    return SOURCES.names(pattern)


def load_source(name: str, root=None, train: bool = True, download: bool = False,
                check_md5: bool = False, **options) -> ImageSet:
    """Load the train (or test) part of a named source as an ``ImageSet``."""
    return SOURCES.get(name)(root=root, train=train, download=download, check_md5=check_md5, **options)


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(path: Path, expected: str | None) -> None:
    if expected is None:
        raise BvkitError(f"no official md5 is known for {path}; load it without check_md5")
    actual = md5sum(path)
    if actual != expected:
        raise BvkitError(f"md5 mismatch for {path}: expected {expected}, got {actual}")


# ---------------------------------------------------------------- CIFAR (python layout)


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_files: tuple[tuple[str, str], ...]  # (file name, official md5)
    test_files: tuple[tuple[str, str], ...]
    meta_file: tuple[str, str]
    labels_key: str
    names_key: str
    n_classes: int
    torchvision_class: str


CIFAR = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                     ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                     ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                     ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                     ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
        test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        labels_key="labels", names_key="label_names", n_classes=10,
        torchvision_class="CIFAR10",
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta_file=("meta", "7973b15100ade9c7d40fb424638fde48"),
        labels_key="fine_labels", names_key="fine_label_names", n_classes=100,
        torchvision_class="CIFAR100",
    ),
}


def _field(batch, key: str, path: Path):
    """A value from a CIFAR dict whose keys may be str or (read with encoding="bytes") bytes."""
    if not isinstance(batch, dict):
        raise BvkitError(f"{path} does not hold a CIFAR dict (found {type(batch).__name__})")
    for candidate in (key, key.encode()):
        if candidate in batch:
            return batch[candidate]
    raise BvkitError(f"{path} has no {key!r} entry")


def _as_text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def cifar_class_names(name: str, root=None) -> list[str] | None:
    """Class names from the meta file, or None when the files are not there."""
    layout = CIFAR[name]
    path = data_root(root) / layout.folder / layout.meta_file[0]
    if not path.is_file():
        return None
    return [_as_text(v) for v in _field(load_pickle(path), layout.names_key, path)]


def _download_torchvision(class_name: str, root: Path, **kw) -> None:
    dataset_class = None
    try:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, class_name)
        dataset_class(str(root), download=True, **kw)
    except Exception as err:  # noqa: BLE001 - offline, proxy, disk full...: one line for the user
        message = " ".join(str(err).split()) or type(err).__name__
        url = getattr(dataset_class, "url", None)  # CIFAR's one archive (FashionMNIST has mirrors)
        where = f" from {url}" if isinstance(url, str) else ""
        if isinstance(url, str) and _is_network_error(err):
            message += f" (cannot reach {urlsplit(url).hostname}: offline, or behind a proxy?)"
        raise BvkitError(f"could not download {class_name}{where} into {root}: {message}") from None


def _is_network_error(err: BaseException) -> bool:
    """A DNS, connection or timeout failure, as opposed to, say, a full disk or an HTTP error
    (which the host did answer)."""
    return isinstance(err, (urllib.error.URLError, socket.gaierror, ConnectionError, TimeoutError)) \
        and not isinstance(err, urllib.error.HTTPError)


def fetch_cifar(name: str, root=None) -> Path:
    """Download CIFAR-10 or CIFAR-100 (train and test) into the data root with torchvision;
    return its folder. Files already there with the official md5 are kept (torchvision's check)."""
    if name not in CIFAR:
        raise BvkitError(f"unknown CIFAR dataset {name!r}; choose from {', '.join(CIFAR)}")
    layout = CIFAR[name]
    root = data_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BvkitError(f"cannot create the data root {root}: {err.strerror or err}") from None
    _download_torchvision(layout.torchvision_class, root, train=True)
    folder = root / layout.folder
    missing = [f for f, _ in layout.train_files + layout.test_files + (layout.meta_file,)
               if not (folder / f).is_file()]
    if missing:
        raise BvkitError(f"{name}: the download left no {folder / missing[0]}")
    return folder


def _load_cifar(name: str, root, train: bool, download: bool, check_md5: bool) -> ImageSet:
    layout = CIFAR[name]
    root = data_root(root)
    folder = root / layout.folder
    files = layout.train_files if train else layout.test_files
    wanted = [folder / f for f, _ in files + (layout.meta_file,)]
    if download and not all(p.is_file() for p in wanted):
        _download_torchvision(layout.torchvision_class, root, train=train)
    missing = [p for p in wanted if not p.is_file()]
    if missing:
        raise BvkitError(
            f"{name} not found: missing {missing[0]}; run `bvkit data fetch {name} "
            f"--data-root {root}` when online, or put the python release under {root} "
            f"(--data-root or BVKIT_DATA)"
        )
    if check_md5:
        for file_name, md5 in files + (layout.meta_file,):
            _check_md5(folder / file_name, md5)
    images, labels = [], []
    for file_name, _ in files:
        path = folder / file_name
        batch = load_pickle(path)
        data = np.asarray(_field(batch, "data", path))
        batch_labels = np.asarray(_field(batch, layout.labels_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
                or len(data) != len(batch_labels):
            raise BvkitError(
                f"{path}: expected uint8 data (N, 3072) and N labels, "
                f"got {data.dtype} {data.shape} and {len(batch_labels)} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    names = cifar_class_names(name, root)
    if len(names) != layout.n_classes:
        raise BvkitError(f"{folder / layout.meta_file[0]}: expected {layout.n_classes} class names, "
                         f"got {len(names)}")
    return ImageSet(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names)


@register_source("cifar10")
def load_cifar10(root=None, train=True, download=False, check_md5=False) -> ImageSet:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (50,000 train / 10,000 test, 32x32x3)."""
    return _load_cifar("cifar10", root, train, download, check_md5)


@register_source("cifar100")
def load_cifar100(root=None, train=True, download=False, check_md5=False) -> ImageSet:
    """CIFAR-100 (fine labels) from ``<root>/cifar-100-python`` (50,000 / 10,000, 32x32x3)."""
    return _load_cifar("cifar100", root, train, download, check_md5)


# ---------------------------------------------------------------- Fashion-MNIST (idx files)

FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An unsigned-byte idx file (gzip-ed when the name ends in .gz) as a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise BvkitError(f"cannot read idx file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise BvkitError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(shape) != ndim or len(raw) != header + int(np.prod(shape)):
        raise BvkitError(f"{path}: idx header says shape {shape}, file has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def fashion_mnist_dirs(root=None) -> list[Path]:
    """Where Fashion-MNIST idx files are looked for, in order."""
    base = data_root(root)
    return [base / "fashion-mnist", base / "FashionMNIST" / "raw", FASHION_MNIST_SYSTEM_DIR]


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


@register_source("fashion-mnist")
def load_fashion_mnist(root=None, train=True, download=False, check_md5=False) -> ImageSet:
    """Fashion-MNIST (60,000 / 10,000 grey 28x28 images, shape (N, 28, 28, 1))."""
    prefix = "train" if train else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")

    def locate():
        for folder in fashion_mnist_dirs(root):
            paths = [_find_idx(folder, stem) for stem in stems]
            if all(paths):
                return paths
        return None

    paths = locate()
    if paths is None and download:
        _download_torchvision("FashionMNIST", data_root(root), train=train)
        paths = locate()
    if paths is None:
        places = ", ".join(str(p) for p in fashion_mnist_dirs(root))
        raise BvkitError(f"fashion-mnist not found: no {stems[0]}[.gz] in {places}")
    if check_md5:
        for path in paths:
            _check_md5(path, FASHION_MNIST_MD5.get(path.name))
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise BvkitError(f"{paths[0]} and {paths[1]}: shapes {images.shape} and {labels.shape} "
                         "do not form an image set")
    return ImageSet(images[..., None].copy(), labels.astype(np.int64), FASHION_MNIST_CLASSES)


# ---------------------------------------------------------------- synthetic


@register_source("synthetic")
def load_synthetic(root=None, train=True, download=False, check_md5=False, *,
                   n_per_class: int | None = None, n_classes: int = 10,
                   world_seed: int = 0, **look) -> ImageSet:
    """Built-in generated images (see ``bvkit.data.synthetic``): 500 per class to train,
    100 per class to test unless ``n_per_class`` says otherwise; nothing read from disk.
    ``look``: the generator's ``size``, ``modes``, ``noise`` and ``distractor``."""
    if n_per_class is None:
        n_per_class = 500 if train else 100
    if n_per_class < 1 or n_classes < 2:
        raise BvkitError(f"synthetic data needs n_per_class >= 1 and n_classes >= 2, "
                         f"got {n_per_class} and {n_classes}")
    return make_synthetic(n_per_class, n_classes, train=train, world_seed=world_seed,
                          **check_look(look))
