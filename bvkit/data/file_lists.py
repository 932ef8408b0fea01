"""ImageNet-LT / iNaturalist 2018 style file lists: one ``relative/path label`` per line.

Only the list is read up front; images are opened lazily (``FileList.read``), so a list of
hundreds of thousands of files costs one text parse. The torch Dataset and DataLoader for
these lists are in ``bvkit.data.loaders``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bvkit.errors import BvkitError


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
