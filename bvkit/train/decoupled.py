"""Decoupled second stages on frozen features (Kang et al. 2020): cRT, tau-norm, LWS.

Each function takes the trained stage-one classifier model (it must expose ``classifier``
with a ``(C, F)`` weight and ``forward_features``), freezes the backbone and swaps in a new
last layer; the backbone's weights are never touched.
"""

from __future__ import annotations

import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.train.loop import freeze
from bvkit.train.metrics import mean_class_accuracy


class TauNormClassifier(nn.Module):
    """Logits ``x @ (w_c / ||w_c||**tau)``; no bias, as in the authors' tau-normalisation."""

    def __init__(self, weight: torch.Tensor, tau: float):
        super().__init__()
        self.tau = float(tau)
        self.register_buffer("weight", tau_normalize(weight.detach(), tau))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.to(features.dtype).t()


class ScaledClassifier(nn.Module):
    """LWS: the frozen classifier's logits times one learned scale per class (init 1)."""

    def __init__(self, classifier: nn.Module, num_classes: int):
        super().__init__()
        self.base = classifier
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(num_classes, device=classifier_weight(classifier).device))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.base(features) * self.scales


def tau_normalize(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """Each row (class) divided by its L2 norm to the power ``tau``."""
    return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)


def classifier_weight(classifier: nn.Module) -> torch.Tensor:
    weight = getattr(classifier, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise BvkitError("decoupled stages need a model whose classifier has a (classes, features) weight")
    return weight


def check_decouplable(model: nn.Module) -> None:
    if not hasattr(model, "classifier") or not hasattr(model, "forward_features"):
        raise BvkitError(
            f"decoupled stages need a single-classifier model with forward_features, got {type(model).__name__}"
        )
    classifier_weight(model.classifier)


def attach_crt(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """cRT: a freshly initialised linear classifier (seeded), the rest frozen. Returns the head."""
    check_decouplable(model)
    freeze(model)
    in_features = classifier_weight(model.classifier).shape[1]
    device = classifier_weight(model.classifier).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(in_features, num_classes)
    model.classifier = head.to(device)
    return model.classifier


def attach_lws(model: nn.Module, num_classes: int) -> nn.Module:
    """LWS: learnable per-class scales on the frozen classifier. Returns the trainable head."""
    check_decouplable(model)
    freeze(model)
    model.classifier = ScaledClassifier(model.classifier, num_classes)
    return model.classifier


def select_tau(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, grid, num_classes: int
) -> tuple[float, list[dict]]:
    """The tau in ``grid`` with the best mean per-class accuracy on (validation) ``features``.

    Ties go to the smaller tau. Returns (tau, [{"tau", "val_accuracy"}, ...]).
    """
    scores = []
    for tau in grid:
        preds = (features @ tau_normalize(weight, float(tau)).t()).argmax(1)
        accuracy = mean_class_accuracy(preds.cpu().numpy(), labels.cpu().numpy(), num_classes)
        scores.append({"tau": float(tau), "val_accuracy": accuracy})
    best = max(scores, key=lambda row: (row["val_accuracy"], -row["tau"]))
    return best["tau"], scores


def attach_tau_norm(model: nn.Module, tau: float) -> nn.Module:
    check_decouplable(model)
    freeze(model)
    model.classifier = TauNormClassifier(classifier_weight(model.classifier), tau)
    return model.classifier
