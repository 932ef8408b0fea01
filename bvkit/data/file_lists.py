"""ImageNet-LT / iNaturalist 2018 style file lists: one ``relative/path label`` per line.

Only the list is read up front; images are opened lazily (``FileList.read``), so a list of
hundreds of thousands of files costs one text parse. The torch Dataset and DataLoader for
these lists are in ``bvkit.data.loaders``.

The benchmarks themselves (``load_benchmark("imagenet-lt")``, ``"inat2018"``) are found under
the data root as the published lists plus the images they name::

    <root>/ImageNet_LT/ImageNet_LT_{train,val,test}.txt    images: <root>/ImageNet_LT/train/...
    <root>/iNaturalist18/iNaturalist18_{train,val}.txt     images: <root>/iNaturalist18/train_val2018/...

(or the lists directly in ``<root>``, images beside them). Paths in a list are relative to the
folder that holds it, as in RIDE's loaders; a symlink to an existing ImageNet / iNat tree is
enough. iNaturalist 2018 ships no test list: its official val list is the test set here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bvkit.errors import BvkitError
from bvkit.registry import Registry


@dataclass(frozen=True)
class FileList:
    """Image paths relative to ``image_root``, their int64 labels and the class names."""

    paths: list[str]
    labels: np.ndarray
    image_root: Path
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.n_classes).astype(np.int64)

    def subset(self, indices) -> FileList:
        """The entries at ``indices`` (same image root and class names)."""
        indices = np.asarray(indices, dtype=np.int64)
        return FileList([self.paths[i] for i in indices], self.labels[indices], self.image_root,
                        self.class_names)

    def read(self, index: int, mode: str = "RGB"):
        """The PIL image at ``index``, converted to ``mode``."""
        from PIL import Image

        path = self.image_root / self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert(mode)
        except (OSError, ValueError) as err:
            raise BvkitError(f"cannot read image {path}: {err}") from None


def parse_file_list(list_path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Paths and labels from a ``relative/path label`` list (blank lines skipped; the label
    is the last field, so paths may contain spaces)."""
    list_path = Path(list_path)
    try:
        text = list_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BvkitError(f"missing file list {list_path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BvkitError(f"cannot read file list {list_path}: {err}") from None
    paths, labels = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rsplit(None, 1)
        if len(fields) != 2 or not fields[1].isdigit():
            raise BvkitError(
                f"{list_path}, line {number}: expected 'relative/path label' with a "
                f"non-negative integer label, got {line.strip()!r}"
            )
        paths.append(fields[0].strip())
        labels.append(int(fields[1]))
    if not paths:
        raise BvkitError(f"file list {list_path} has no entries")
    return paths, np.asarray(labels, dtype=np.int64)


def load_file_list(list_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                   class_names: list[str] | None = None) -> FileList:
    """Read a file list; ``image_root`` defaults to the list's directory. Classes are
    ``0..max(label)`` unless ``class_names`` names them."""
    paths, labels = parse_file_list(list_path)
    image_root = Path(image_root) if image_root is not None else Path(list_path).parent
    if not image_root.is_dir():
        raise BvkitError(f"image root {image_root} is not a directory")
    n_classes = int(labels.max()) + 1
    if class_names is None:
        class_names = [str(c) for c in range(n_classes)]
    elif len(class_names) < n_classes:
        raise BvkitError(f"{list_path} has label {n_classes - 1} but only "
                         f"{len(class_names)} class names were given")
    return FileList(paths, labels, image_root, list(class_names))


# ---------------------------------------------------------------- benchmarks built from lists


@dataclass(frozen=True)
class FileListSpec:
    """Where a file-list benchmark's lists are: a folder under the data root and the list names;
    ``val`` is None where the benchmark ships no validation list (iNat 2018)."""

    folder: str
    train: str
    test: str
    val: str | None


FILE_LIST_DATASETS: Registry[FileListSpec] = Registry("file-list dataset")
FILE_LIST_DATASETS.register("imagenet-lt", FileListSpec(
    "ImageNet_LT", "ImageNet_LT_train.txt", "ImageNet_LT_test.txt", "ImageNet_LT_val.txt"))
# iNat 2018 has train and val lists only; the official val list is the benchmark's test set
FILE_LIST_DATASETS.register("inat2018", FileListSpec(
    "iNaturalist18", "iNaturalist18_train.txt", "iNaturalist18_val.txt", None))


def list_benchmarks(pattern: str = "*") -> list[str]:
    """Names of the file-list benchmarks (``load_benchmark``)."""
    return FILE_LIST_DATASETS.names(pattern)


@dataclass(frozen=True)
class FileListBenchmark:
    """A file-list benchmark: its training list, validation list (None: none shipped) and test
    list, sharing one set of classes (``0..max label`` over the three lists)."""

    name: str
    train: FileList
    val: FileList | None
    test: FileList

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    @property
    def counts(self) -> np.ndarray:
        """Training images per class (the whole training list): the shot splits' counts."""
        return self.train.class_counts()


def find_list_folder(name: str, root=None) -> Path:
    """The folder holding ``name``'s training list: ``<root>/<folder>``, else ``<root>``."""
    from bvkit.data.sources import data_root

    spec = FILE_LIST_DATASETS.get(name)
    base = data_root(root)
    for folder in (base / spec.folder, base):
        if (folder / spec.train).is_file():
            return folder
    raise BvkitError(f"{name} not found: no {spec.train} in {base / spec.folder} or {base}; put the "
                     f"published lists there, images under the paths they name (--data-root or BVKIT_DATA)")


def load_benchmark(name: str, root=None) -> FileListBenchmark:
    """Read a file-list benchmark's lists (images stay on disk until read)."""
    spec = FILE_LIST_DATASETS.get(name)
    folder = find_list_folder(name, root)
    parts = {"train": spec.train, "val": spec.val, "test": spec.test}
    parsed = {part: parse_file_list(folder / file) for part, file in parts.items() if file is not None}
    n_classes = max(int(labels.max()) for _, labels in parsed.values()) + 1
    names = [str(c) for c in range(n_classes)]
    lists = {part: FileList(paths, labels, folder, names) for part, (paths, labels) in parsed.items()}
    return FileListBenchmark(name, lists["train"], lists.get("val"), lists["test"])
