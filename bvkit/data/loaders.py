"""Torch loaders: small datasets live on the device as uint8 and are augmented there in batches
(airbench style); file-list datasets (ImageNet-LT, iNat) go through a standard DataLoader.

Randomness comes from an explicit ``torch.Generator``. Its numbers are drawn on the
generator's device and then moved, so a CPU generator gives the same batches on CPU and GPU.
Images keep their native size (Fashion-MNIST stays 28x28x1): cropping, flipping and rotation
work for any height, width and channel count.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bvkit.data.file_lists import FileList
from bvkit.data.imageset import ImageSet
from bvkit.data.long_tailed import CIFAR_MEAN, CIFAR_STD
from bvkit.errors import BvkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_device(images: ImageSet, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """An ImageSet as ``(x uint8 (N, C, H, W), y int64 (N,))`` on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(images.images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(images.labels.astype(np.int64))
    return x.to(device).contiguous(), y.to(device)


def normalize(x: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """uint8 (or [0, 1] float) ``(B, C, H, W)`` -> float32 normalised per channel."""
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise BvkitError(f"mean/std have {len(mean)} values for images with {x.shape[1]} channels")
    out = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    mean_t = torch.tensor(mean, dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=out.dtype, device=out.device).view(1, -1, 1, 1)
    return out.sub_(mean_t).div_(std_t)


def _draw(generator, x: torch.Tensor, kind: str, *args, **kw) -> torch.Tensor:
    """Random numbers from ``generator`` on its own device, moved to ``x``'s device."""
    device = generator.device if generator is not None else x.device
    fn = torch.randint if kind == "int" else torch.rand
    return fn(*args, generator=generator, device=device, **kw).to(x.device)


def random_crop_flip_rotate(x: torch.Tensor, padding: int = 4, flip: bool = True,
                            degrees: float = 0.0, generator=None) -> torch.Tensor:
    """Random crop with zero padding, then horizontal flip (p = 1/2), then rotation by an
    angle uniform in ``[-degrees, degrees]`` (nearest neighbour, zero fill, as torchvision's
    ``RandomRotation`` default), all as one gather on the uint8 batch."""
    b = x.shape[0]
    params = {}
    if degrees:
        params["angle"] = _draw(generator, x, "float", (b, 1, 1))
    if flip:
        params["flip"] = _draw(generator, x, "float", (b, 1, 1))
    if padding:
        params["rows"] = _draw(generator, x, "int", 0, 2 * padding + 1, (b, 1, 1))
        params["cols"] = _draw(generator, x, "int", 0, 2 * padding + 1, (b, 1, 1))
    return crop_flip_rotate_with(x, padding, degrees, params)


def crop_flip_rotate_with(x: torch.Tensor, padding: int, degrees: float, params: dict) -> torch.Tensor:
    """``random_crop_flip_rotate`` with its random draws given: uniform ``angle`` and ``flip``
    draws (B, 1, 1), integer ``rows`` / ``cols`` crop offsets in ``[0, 2 * padding]``.

    Each output pixel's source pixel is computed by index arithmetic, so the cost is one
    pass over the batch whatever the combination; pixels from outside the image are 0.
    """
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    inside = torch.ones(1, 1, 1, dtype=torch.bool, device=x.device)
    if "angle" in params:
        angle = (params["angle"] * 2 - 1) * math.radians(degrees)
        cos, sin = torch.cos(angle), torch.sin(angle)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        u, v = cols - cx, rows - cy
        src_cols = torch.round(cos * u - sin * v + cx)
        src_rows = torch.round(sin * u + cos * v + cy)
        # corners rotated in from outside the cropped image are fill, as in torchvision
        inside = (src_rows >= 0) & (src_rows < h) & (src_cols >= 0) & (src_cols < w)
    else:
        src_rows, src_cols = rows.expand(b, h, w), cols.expand(b, h, w)
    if "flip" in params:
        src_cols = torch.where(params["flip"] < 0.5, (w - 1) - src_cols, src_cols)
    if "rows" in params:
        src_rows = src_rows + (params["rows"] - padding)
        src_cols = src_cols + (params["cols"] - padding)
    src_rows, src_cols = src_rows.long(), src_cols.long()
    inside = inside & (src_rows >= 0) & (src_rows < h) & (src_cols >= 0) & (src_cols < w)
    index = torch.where(inside, src_rows * w + src_cols, 0).view(b, 1, h * w).expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, index)
    return out.masked_fill_(~inside.view(b, 1, h * w), 0).view(b, c, h, w)


def random_crop(x: torch.Tensor, padding: int, generator=None) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut each image back to its size at a random offset."""
    return random_crop_flip_rotate(x, padding, flip=False, generator=generator)


class Augment:
    """Batch augmentation on the batch's device: random crop with zero padding, horizontal
    flip, optional rotation (one uint8 gather, see ``random_crop_flip_rotate``), then
    normalisation. ``__call__(x_uint8, generator)`` -> float32.

    RIDE's CIFAR recipe is ``Augment(crop_padding=4, flip=True, rotation=15)``.
    """

    def __init__(self, crop_padding: int = 4, flip: bool = True, rotation: float = 0.0,
                 mean=CIFAR_MEAN, std=CIFAR_STD):
        self.crop_padding = crop_padding
        self.flip = flip
        self.rotation = rotation
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise BvkitError(f"Augment expects a uint8 (B, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
        if self.crop_padding or self.flip or self.rotation:
            x = random_crop_flip_rotate(x, self.crop_padding, self.flip, self.rotation, generator)
        return normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"Augment(crop_padding={self.crop_padding}, flip={self.flip}, "
                f"rotation={self.rotation}, mean={self.mean}, std={self.std})")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def balanced_indices(labels: torch.Tensor, n: int, generator=None) -> torch.Tensor:
    """``n`` indices drawn class-balanced: a class uniformly among those present, then an
    image of it uniformly (with replacement), as in cRT's class-aware sampling."""
    labels = labels.cpu()
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique(labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    pick = torch.randint(len(classes), (n,), generator=generator)
    offset = (torch.rand(n, generator=generator) * counts[pick]).long().clamp_max_(counts[pick] - 1)
    return order[starts[pick] + offset]


class EpochOrder:
    """The epoch order both loaders share: ``len(labels)`` samples per epoch, shuffled,
    class-balanced (:func:`balanced_indices`) or in order, drawn from the ``(seed, epoch)``
    generator and cut into batches of ``batch_size``. Subclasses set ``labels``, ``batch_size``,
    ``shuffle``, ``balanced``, ``drop_last``, ``seed`` and ``epoch``."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        if self.balanced:
            return balanced_indices(self.labels, n, generator)
        if self.shuffle:
            return torch.randperm(n, generator=generator)
        return torch.arange(n)


class DeviceLoader(EpochOrder):
    """Batches ``(inputs float, targets int64)`` from a uint8 dataset held on its device.

    The order and augmentation of epoch ``e`` depend only on ``(seed, e)``; ``set_epoch``
    picks the epoch, otherwise each full iteration moves on to the next one.
    ``balanced=True`` draws ``len(y)`` class-balanced samples per epoch.
    Without ``augment`` the inputs are only normalised with ``mean``/``std``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, balanced: bool = False, augment=None, seed: int = 0,
                 mean=CIFAR_MEAN, std=CIFAR_STD):
        if x.dtype != torch.uint8 or x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
            raise BvkitError(f"DeviceLoader needs uint8 x (N, C, H, W) and y (N,), got "
                             f"{x.dtype} {tuple(x.shape)} and {tuple(y.shape)}")
        if batch_size < 1:
            raise BvkitError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y.long()
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last, self.balanced = shuffle, drop_last, balanced
        self.augment, self.seed = augment, seed
        self.mean, self.std = tuple(mean), tuple(std)
        self.labels = self.y  # what class-balanced sampling balances (the targets by default)
        self.epoch = 0

    def plan(self, epoch: int | None = None) -> "EpochPlan":
        """Epoch ``epoch``'s order and augmentation parameters, drawn up front (default: the
        current epoch)."""
        return EpochPlan(self, self.epoch if epoch is None else epoch)

    def __iter__(self):
        plan = self.plan()
        self.epoch += 1
        for b in range(len(self)):
            batch, targets, params = plan.batch(b)
            if self.augment is None:
                yield normalize(batch, self.mean, self.std), targets
                continue
            if params:
                batch = crop_flip_rotate_with(batch, self.augment.crop_padding, self.augment.rotation, params)
            yield normalize(batch, self.augment.mean, self.augment.std), targets


class EpochPlan:
    """One epoch of a :class:`DeviceLoader`, drawn before its first batch: the sample order and
    every batch's augmentation parameters, from the epoch generator in batch order (per batch:
    angle, flip, rows, cols, as ``random_crop_flip_rotate`` draws them), moved to the device in
    one transfer each, so iterating the epoch costs no host-device round trip."""

    def __init__(self, loader: DeviceLoader, epoch: int):
        generator = epoch_generator(loader.seed, epoch)
        self.loader, self.n_batches = loader, len(loader)
        size = loader.batch_size
        used = loader.epoch_indices(generator)[: self.n_batches * size]
        self.order = used.to(loader.x.device)
        self.params: dict[str, torch.Tensor] = {}
        augment = loader.augment
        if augment is None or not (augment.crop_padding or augment.flip or augment.rotation):
            return
        draws: dict[str, list] = {"angle": [], "flip": [], "rows": [], "cols": []}
        for b in range(self.n_batches):
            n = len(used[b * size:(b + 1) * size])
            if augment.rotation:
                draws["angle"].append(torch.rand((n, 1, 1), generator=generator))
            if augment.flip:
                draws["flip"].append(torch.rand((n, 1, 1), generator=generator))
            if augment.crop_padding:
                span = 2 * augment.crop_padding + 1
                draws["rows"].append(torch.randint(0, span, (n, 1, 1), generator=generator))
                draws["cols"].append(torch.randint(0, span, (n, 1, 1), generator=generator))
        self.params = {key: torch.cat(values).to(loader.x.device) for key, values in draws.items() if values}

    def batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Batch ``b``: uint8 images, targets and its augmentation parameters."""
        size = self.loader.batch_size
        idx = self.order[b * size:(b + 1) * size]
        params = {key: value[b * size:(b + 1) * size] for key, value in self.params.items()}
        return self.loader.x[idx], self.loader.y[idx], params


# ---------------------------------------------------------------- file lists (ImageNet-LT, iNat)


class FileListDataset(torch.utils.data.Dataset):
    """A ``FileList`` as a torch Dataset of ``(transform(PIL image), label)``; images are read
    when indexed, so workers share nothing but the list.

    Indexed by ``(epoch, index)`` (what :class:`EpochBatchSampler` yields), the transform's
    random draws come from a generator seeded by ``(seed, epoch, index)``: a sample's
    augmentation is then the same whatever the worker count, the DDP world size or a resume.
    """

    def __init__(self, file_list: FileList, transform=None, mode: str = "RGB", seed: int = 0):
        self.file_list, self.transform, self.mode, self.seed = file_list, transform, mode, int(seed)

    def __len__(self) -> int:
        return len(self.file_list)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            epoch, index = key
            # torchvision's random transforms draw from torch's global CPU generator: seed it for
            # this sample only (fork_rng restores it, so the caller's stream is untouched)
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
                return self._item(index)
        return self._item(key)

    def _item(self, index: int):
        image = self.file_list.read(index, self.mode)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.file_list.labels[index])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def imagenet_transform(train: bool, size: int = 224, resize: int = 256,
                       mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """RIDE's ImageNet-LT / iNat transforms: train RandomResizedCrop + flip + colour jitter,
    test Resize + CenterCrop; both ToTensor + Normalize."""
    from torchvision import transforms as T

    if train:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                 T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0)]
    else:
        steps = [T.Resize(resize), T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


class BalancedSampler(torch.utils.data.Sampler):
    """Class-balanced indices for a DataLoader; epoch ``e``'s draw depends on ``(seed, e)``."""

    def __init__(self, labels, num_samples: int | None = None, seed: int = 0):
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.num_samples = len(self.labels) if num_samples is None else int(num_samples)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = epoch_generator(self.seed, self.epoch)
        self.epoch += 1
        return iter(balanced_indices(self.labels, self.num_samples, generator).tolist())


class EpochBatchSampler(EpochOrder, torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` keys: epoch ``e``'s order (shuffled, class-balanced as
    :func:`balanced_indices`, or in order) depends only on ``(seed, e)``, as ``DeviceLoader``'s.

    Under DDP (``world_size > 1``) every rank draws the same global batches of ``batch_size`` and
    keeps its contiguous slice of each (``tensor_split``, as ``bvkit.train.ddp.shard``), so the
    ranks together see exactly the single-process batches and each decodes only its own images.
    ``set_epoch`` picks the epoch; otherwise each full iteration moves on to the next one.
    """

    def __init__(self, labels, batch_size: int, shuffle: bool = True, balanced: bool = False,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if batch_size < world_size or batch_size < 1:
            raise BvkitError(f"batch size {batch_size} cannot be split over {world_size} processes")
        self.batch_size, self.shuffle, self.balanced = int(batch_size), shuffle, balanced
        self.drop_last, self.seed, self.rank, self.world_size = drop_last, seed, int(rank), int(world_size)
        self.epoch = 0

    def __iter__(self):
        epoch = self.epoch
        order = self.epoch_indices(epoch_generator(self.seed, epoch))
        self.epoch += 1
        for b in range(len(self)):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(epoch, int(i)) for i in batch.tensor_split(self.world_size)[self.rank]]


class FileListLoader:
    """A training DataLoader over a file list driven by an :class:`EpochBatchSampler`:
    ``set_epoch``, ``len`` (global batches per epoch) and iteration of ``(inputs, targets)``,
    what ``bvkit.train.loop.train_phase`` needs. ``sharded``: each DDP rank yields its own
    slice of every batch, so ``train_phase`` must not slice it again."""

    def __init__(self, dataset: FileListDataset, sampler: EpochBatchSampler, workers: int = 4, **loader_kw):
        self.dataset, self.sampler = dataset, sampler
        self.sharded = sampler.world_size > 1
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers,
            pin_memory=torch.cuda.is_available(), persistent_workers=False, **loader_kw)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        try:
            yield from self.loader
        except BvkitError as err:  # re-raised from a worker with its traceback: keep one line
            raise BvkitError(worker_message(err)) from None


def worker_message(err: Exception) -> str:
    """The original message of an error a DataLoader worker re-raised with its traceback."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    return lines[-1].split(": ", 1)[-1] if lines[-1].startswith(("bvkit.", "BvkitError")) else lines[-1]


def file_list_loader(file_list: FileList, batch_size: int, train: bool = True,
                     workers: int = 4, balanced: bool = False, seed: int = 0,
                     transform=None, image_size: int = 224, drop_last: bool | None = None,
                     rank: int = 0, world_size: int = 1, **loader_kw):
    """A standard DataLoader over a file list. ``train``: a :class:`FileListLoader`, shuffled
    (or class-balanced) with ImageNet training transforms, every sample's augmentation seeded
    by ``(seed, epoch, index)`` so runs repeat exactly whatever ``workers``; ``rank`` /
    ``world_size`` give this DDP rank's slice of every global batch. Otherwise a plain
    DataLoader in list order with the test transforms."""
    if transform is None:
        transform = imagenet_transform(train, size=image_size, resize=round(image_size * 256 / 224))
    if train:
        sampler = EpochBatchSampler(file_list.labels, batch_size, shuffle=True, balanced=balanced,
                                    drop_last=True if drop_last is None else drop_last, seed=seed,
                                    rank=rank, world_size=world_size)
        return FileListLoader(FileListDataset(file_list, transform, seed=seed), sampler, workers, **loader_kw)
    return torch.utils.data.DataLoader(
        FileListDataset(file_list, transform), batch_size=batch_size, shuffle=False,
        num_workers=workers, drop_last=bool(drop_last), pin_memory=torch.cuda.is_available(),
        persistent_workers=False, **loader_kw)
