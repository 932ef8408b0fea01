import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bvkit.data import (
    CIFAR_MEAN,
    Augment,
    BalancedSampler,
    DeviceLoader,
    ImageSet,
    balanced_indices,
    normalize,
    random_crop,
    random_crop_flip_rotate,
    to_device,
)
from bvkit.errors import BvkitError


def batch(n=16, c=3, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_to_device_layout(synthetic_lt):
    x, y = to_device(synthetic_lt.train)
    assert x.dtype == torch.uint8 and x.shape == (1236, 3, 32, 32) and x.is_contiguous()
    assert y.dtype == torch.int64
    assert torch.equal(x[5].permute(1, 2, 0), torch.from_numpy(synthetic_lt.train.images[5]))


def test_normalize():
    x = batch()
    out = normalize(x)
    assert out.dtype == torch.float32
    expected = (x[:, 0].float() / 255 - CIFAR_MEAN[0]) / 0.2023
    assert torch.allclose(out[:, 0], expected, atol=1e-6)
    with pytest.raises(BvkitError, match="3 values for images with 1 channels"):
        normalize(batch(c=1))


def test_augment_shapes_determinism_and_change():
    x = batch()
    augment = Augment(crop_padding=4, flip=True, rotation=15)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.allclose(a, normalize(x))
    assert torch.equal(x, batch())  # input untouched


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = batch(n=8, h=28, w=20)
    out = random_crop(x, 4, torch.Generator().manual_seed(3))
    padded = F.pad(x, (4, 4, 4, 4))
    shifts = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 20])]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 1


def test_flip_only_mirrors_about_half():
    x = batch(n=200)
    out = Augment(crop_padding=0, flip=True, mean=(0, 0, 0), std=(1, 1, 1))(
        x, torch.Generator().manual_seed(0))
    base = x.float() / 255
    flipped = torch.tensor([torch.equal(o, b.flip(2)) for o, b in zip(out, base)])
    same = torch.tensor([torch.equal(o, b) for o, b in zip(out, base)])
    assert torch.all(flipped ^ same)
    assert 60 < int(flipped.sum()) < 140


def test_rotation_of_a_non_square_image_keeps_shape_and_centre():
    x = torch.zeros(64, 1, 28, 40, dtype=torch.uint8)
    x[:, :, 11:17, 17:23] = 255  # a centred square: its middle survives any rotation <= 15 deg
    out = random_crop_flip_rotate(x, padding=0, flip=False, degrees=15.0,
                                  generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.all(out[:, :, 13:15, 19:21] == 255)
    assert torch.all(out[:, :, :5] == 0) and torch.all(out[:, :, :, :8] == 0)
    same = batch(n=1).expand(64, 3, 32, 32)
    rotated = random_crop_flip_rotate(same, 0, False, 15.0, torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten().tolist()) for o in rotated}) > 50  # angles differ per image
    ones = torch.full((8, 3, 32, 32), 7, dtype=torch.uint8)
    corners = random_crop_flip_rotate(ones, 0, False, 15.0, torch.Generator().manual_seed(1))
    assert (corners == 0).any() and (corners[:, :, 8:24, 8:24] == 7).all()  # zero fill only at the rim
    unrotated = random_crop_flip_rotate(x, 0, False, 0.0)
    assert torch.equal(unrotated, x)


def test_grey_28x28_images_work():
    x = batch(n=4, c=1, h=28, w=28)
    grey = {"mean": (0.286,), "std": (0.353,)}
    out = Augment(rotation=10, **grey)(x, torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 28, 28) and out.dtype == torch.float32
    plain = Augment(crop_padding=0, flip=False, **grey)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain, (x.float() / 255 - 0.286) / 0.353, rtol=0, atol=1e-6)  # the one channel's own statistics
    assert not torch.allclose(out, plain)  # cropped, flipped, rotated


def test_cpu_generator_drives_augmentation_of_any_device_batch():
    x = batch()
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    out = Augment(rotation=15)(x.to("cpu"), g)  # same code path as a CUDA batch with a CPU generator
    assert not torch.equal(g.get_state(), state)  # the draws came from this generator
    assert torch.equal(out, Augment(rotation=15)(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(out, Augment(rotation=15)(x, torch.Generator().manual_seed(6)))
    if torch.cuda.is_available():  # the same draws, so the same images on the GPU
        on_gpu = Augment(rotation=15)(x.cuda(), torch.Generator().manual_seed(5))
        torch.testing.assert_close(on_gpu.cpu(), out, rtol=0, atol=1e-5)


def test_device_loader_epochs():
    x, y = batch(n=50), torch.arange(50) % 5
    loader = DeviceLoader(x, y, batch_size=16, augment=Augment(), seed=0)
    assert len(loader) == 4
    assert len(DeviceLoader(x, y, 16, drop_last=True)) == 3
    first = list(loader)
    assert [len(t) for _, t in first] == [16, 16, 16, 2]
    assert sorted(torch.cat([t for _, t in first]).tolist()) == sorted(y.tolist())
    second = list(loader)
    assert not torch.equal(first[0][0], second[0][0])
    loader.set_epoch(0)
    replay = list(loader)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, replay))
    plain = list(DeviceLoader(x, y, 50, shuffle=False))
    assert torch.equal(plain[0][0], normalize(x)) and torch.equal(plain[0][1], y)


def test_epoch_plan_gives_the_batches_of_per_batch_augmentation():
    """The loader draws an epoch's order and augmentation up front; the batches must be the
    ones drawing per batch from the same epoch generator gives (same order of draws)."""
    from bvkit.data import epoch_generator

    x = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(20) % 4
    augment = Augment(crop_padding=2, flip=True, rotation=10.0)
    loader = DeviceLoader(x, y, 6, augment=augment, seed=3)
    loader.set_epoch(2)
    batches = list(loader)
    generator = epoch_generator(3, 2)
    order = torch.randperm(20, generator=generator)
    assert [len(t) for _, t in batches] == [6, 6, 6, 2]
    for b, (inputs, targets) in enumerate(batches):
        idx = order[b * 6:(b + 1) * 6]
        assert torch.equal(targets, y[idx])
        assert torch.equal(inputs, augment(x[idx], generator))


def test_balanced_sampling_is_roughly_uniform(synthetic_lt):
    y = torch.from_numpy(synthetic_lt.train.labels)
    idx = balanced_indices(y, 20000, torch.Generator().manual_seed(0))
    freq = torch.bincount(y[idx], minlength=10).float() / 20000
    assert torch.all((freq - 0.1).abs() < 0.015)
    assert set(idx[y[idx] == 9].tolist()) == set(torch.nonzero(y == 9).flatten().tolist())
    counts = torch.bincount(y, minlength=10)
    assert counts[0] > 50 * counts[9]  # a long tail to balance

    # the loader: each epoch len(y) draws; over 10 epochs every class near 1/10, each image the
    # index of its own class (x holds the index, so a batch's inputs name the images drawn)
    index = torch.arange(len(y))
    x = torch.stack([index // 256, index % 256]).T.reshape(-1, 2, 1, 1).to(torch.uint8)
    loader = DeviceLoader(x, y, 256, balanced=True, augment=Augment(crop_padding=0, flip=False, mean=(0, 0),
                                                                     std=(1 / 255, 1 / 255)), seed=0)
    drawn = []
    for epoch in range(10):
        loader.set_epoch(epoch)
        epoch_draws = [(inputs.round().long(), targets) for inputs, targets in loader]
        picked = torch.cat([i[:, 0, 0, 0] * 256 + i[:, 1, 0, 0] for i, _ in epoch_draws])
        targets = torch.cat([t for _, t in epoch_draws])
        assert len(picked) == len(y) and torch.equal(y[picked], targets)
        drawn.append(picked)
    drawn = torch.cat(drawn)
    freq = torch.bincount(y[drawn], minlength=10).float() / len(drawn)
    assert torch.all((freq - 0.1).abs() < 0.02), freq  # the long-tailed share of class 0 is 0.4
    tail = torch.nonzero(y == 9).flatten()
    per_image = torch.bincount(drawn, minlength=len(y))[tail].float()
    assert per_image.min() > 0.5 * per_image.mean()  # within a class, each image alike
    shuffled = DeviceLoader(x, y, 256, mean=(0, 0), std=(1, 1))
    assert torch.equal(torch.bincount(torch.cat([t for _, t in shuffled]), minlength=10), counts)

    sampler = BalancedSampler(y.numpy(), seed=0)
    assert len(list(sampler)) == len(y)
    sampler.set_epoch(0)
    assert list(sampler) == list(BalancedSampler(y.numpy(), seed=0))
    sampler = BalancedSampler(y.numpy(), num_samples=20000, seed=1)
    freq = torch.bincount(y[list(sampler)], minlength=10).float() / 20000
    assert torch.all((freq - 0.1).abs() < 0.015), freq


def test_loader_rejects_bad_input():
    with pytest.raises(BvkitError, match="uint8"):
        DeviceLoader(torch.zeros(4, 3, 2, 2), torch.zeros(4), 2)
    with pytest.raises(BvkitError, match="uint8"):
        Augment()(torch.zeros(4, 3, 8, 8))


def test_imageset_validation():
    with pytest.raises(BvkitError, match="uint8"):
        ImageSet(np.zeros((2, 4, 4, 3), np.float32), np.zeros(2), ["a"])
    with pytest.raises(BvkitError, match="labels must lie in 0..0"):
        ImageSet(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), ["a"])
