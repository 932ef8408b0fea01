"""The in-memory image set every source returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bvkit.errors import BvkitError


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 ``(N, H, W, C)`` (C = 3 or 1) in their native size, int64 labels
    ``(N,)`` and one name per class. Loaders accept any H and W, so nothing is resized here."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __post_init__(self):
        images, labels = np.asarray(self.images), np.asarray(self.labels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise BvkitError(
                f"images must be uint8 (N, H, W, 1 or 3), got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise BvkitError(f"labels must have shape ({len(images)},), got {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise BvkitError(
                f"labels must lie in 0..{len(self.class_names) - 1}, "
                f"got {labels.min()}..{labels.max()}"
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "class_names", [str(n) for n in self.class_names])

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        """Images per class, int64 ``(C,)``."""
        return np.bincount(self.labels, minlength=self.n_classes).astype(np.int64)

    def subset(self, indices) -> ImageSet:
        """The images at ``indices`` (repeats allowed, e.g. a bootstrap subset)."""
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(self.images[indices], self.labels[indices], self.class_names)
