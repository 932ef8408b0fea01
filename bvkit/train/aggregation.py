"""SADE's test-time self-supervised aggregation (Zhang et al., NeurIPS 2022, "Self-Supervised
Aggregation of Diverse Experts for Test-Agnostic Long-Tailed Recognition"; the authors'
``test_training_cifar.py``).

The trained experts are frozen (BatchNorm in eval mode). Their aggregation weights are
``softmax(w)`` of E free values, starting uniform. Each step takes a batch of **unlabeled test
images**, makes two augmented views of each, and maximises the mean cosine similarity of the
two views' aggregated predictions ``softmax(sum_e softmax(w)_e z_e)``; SGD on ``w`` alone.
After each epoch the weights are checked, and learning stops once one of them falls under
``min_weight`` (0.05). The result is a convex combination (>= 0, sum 1).

:func:`learn_aggregation` is handed images only: no label can reach it. Its randomness (the
order of the test images, every view's augmentation) comes from ``seed`` alone.

Views (the authors' MoCo-v2 style transform): a random 32 x 32 crop with 4-pixel zero padding,
colour jitter with probability ``jitter_p`` (0.8: brightness, contrast and saturation factors
uniform in ``[1 - jitter, 1 + jitter]``, jitter 0.4, applied in that order), grayscale with
probability ``grayscale_p`` (0.2), a horizontal flip with probability 1/2, then the run's
normalisation. The authors' transform also jitters the hue (0.1), applies the jitters in a
random order and blurs (Gaussian, p 0.2); those are not carried over (``docs/recipes.md``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bvkit.data import epoch_generator, normalize, random_crop_flip_rotate
from bvkit.errors import BvkitError

GRAY = (0.299, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _uniform(generator: torch.Generator, shape, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance of [0, 1] images (the image itself with one channel)."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    weights = torch.tensor(GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def augmented_view(x: torch.Tensor, generator: torch.Generator, *, mean, std, jitter: float = 0.4,
                   jitter_p: float = 0.8, grayscale_p: float = 0.2, padding: int = 4) -> torch.Tensor:
    """One augmented view (float32, normalised) of the uint8 batch ``x`` (module doc)."""
    b = x.shape[0]
    x = random_crop_flip_rotate(x, padding, flip=True, degrees=0.0, generator=generator)
    x = x.float().div_(255)
    apply = _uniform(generator, (b, 1, 1, 1), x.device) < jitter_p
    factors = 1.0 + jitter * (2 * _uniform(generator, (3, b, 1, 1, 1), x.device) - 1)
    factors = torch.where(apply, factors.clamp_min(0), torch.ones_like(factors))
    brightness, contrast, saturation = factors
    x = (x * brightness).clamp_(0, 1)
    means = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - means) * contrast + means).clamp_(0, 1)
    if x.shape[1] == 3:
        gray = _gray(x)
        x = ((x - gray) * saturation + gray).clamp_(0, 1)
        to_gray = _uniform(generator, (b, 1, 1, 1), x.device) < grayscale_p
        x = torch.where(to_gray, _gray(x).expand_as(x), x)
    return normalize(x, mean, std)


def similarity_loss(expert_logits: tuple[torch.Tensor, torch.Tensor], logits_w: torch.Tensor) -> torch.Tensor:
    """Minus the mean cosine similarity of the two views' aggregated predictions: each view's
    experts' logits (E, B, C) weighted by ``softmax(logits_w)``, then a softmax over classes."""
    weights = torch.softmax(logits_w, dim=0)
    probs = [torch.softmax(torch.einsum("e,ebc->bc", weights, z), dim=1) for z in expert_logits]
    return -F.cosine_similarity(probs[0], probs[1], dim=1, eps=1e-6).mean()


def learn_aggregation(experts: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, num_experts: int, *,
                      epochs: int, batch_size: int, lr: float, momentum: float, nesterov: bool, weight_decay: float,
                      seed: int, mean, std, min_weight: float = 0.05, jitter: float = 0.4, jitter_p: float = 0.8,
                      grayscale_p: float = 0.2, on_epoch: Callable[[dict], None] | None = None
                      ) -> tuple[torch.Tensor, list[dict]]:
    """(weights (E,) on the CPU, one ``{"epoch", "loss", "weights", "images", "seconds"}`` per
    epoch run): the experts' aggregation weights learned on the unlabeled ``images`` (uint8
    (N, C, H, W)). ``experts(x)`` gives the frozen experts' logits (E, B, C) of normalised
    inputs; it is called without gradients. ``on_epoch`` receives each epoch's row."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise BvkitError(f"test-time aggregation needs uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if batch_size < 1 or epochs < 0:
        raise BvkitError(f"test-time aggregation needs batch_size >= 1 and epochs >= 0, got {batch_size}, {epochs}")
    device = images.device
    logits_w = torch.full((num_experts,), 1.0 / num_experts, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([logits_w], lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    view = dict(mean=mean, std=std, jitter=jitter, jitter_p=jitter_p, grayscale_p=grayscale_p)
    rows = []
    for epoch in range(epochs):
        started = time.perf_counter()
        generator = epoch_generator(seed, epoch)
        order = torch.randperm(len(images), generator=generator).to(device)
        total, seen = torch.zeros((), device=device), 0
        for start in range(0, len(images), batch_size):
            batch = images[order[start:start + batch_size]]
            views = [augmented_view(batch, generator, **view) for _ in range(2)]
            with torch.no_grad():
                outputs = tuple(experts(v).float() for v in views)
            loss = similarity_loss(outputs, logits_w)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(batch)
            seen += len(batch)
        weights = torch.softmax(logits_w.detach(), dim=0).cpu()
        row = {"epoch": epoch + 1, "loss": float(total) / max(seen, 1), "weights": weights.tolist(), "images": seen,
               "seconds": time.perf_counter() - started}
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if bool((weights < min_weight).any()):  # the authors' stop: a weight under min_weight
            break
    weights = torch.softmax(logits_w.detach(), dim=0).cpu()
    if not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-5):  # softmax: cannot happen short of NaNs
        raise BvkitError(f"test-time aggregation diverged: weights {weights.tolist()}")
    return weights, rows
