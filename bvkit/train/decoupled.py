"""Decoupled second stages on frozen features: cRT, tau-norm, LWS (Kang et al. 2020), the
post-hoc logit adjustment (Menon et al. 2021) and weight balancing's MaxNorm fine-tuning of the
classifier (Alshammari et al. 2022).

Each function takes the trained stage-one classifier model (it must expose ``classifier``
with a ``(C, F)`` weight and ``forward_features``), freezes the backbone and swaps in a new
last layer (or, for weight balancing, lets the old one train); the backbone's weights are
never touched.
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

    def __init__(self, classifier: nn.Module, n_classes: int):
        super().__init__()
        self.base = classifier
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(n_classes, device=classifier_weight(classifier).device))

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


def attach_crt(model: nn.Module, n_classes: int, seed: int) -> nn.Module:
    """cRT: a freshly initialised linear classifier (seeded), the rest frozen. Returns the head."""
    check_decouplable(model)
    freeze(model)
    in_features = classifier_weight(model.classifier).shape[1]
    device = classifier_weight(model.classifier).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(in_features, n_classes)
    model.classifier = head.to(device)
    return model.classifier


def attach_lws(model: nn.Module, n_classes: int) -> nn.Module:
    """LWS: learnable per-class scales on the frozen classifier. Returns the trainable head."""
    check_decouplable(model)
    freeze(model)
    model.classifier = ScaledClassifier(model.classifier, n_classes)
    return model.classifier


def select_tau(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, grid, n_classes: int
) -> tuple[float, list[dict]]:
    """The tau in ``grid`` with the best mean per-class accuracy on (validation) ``features``.

    Ties go to the smaller tau. Returns (tau, [{"tau", "val_accuracy"}, ...]).
    """
    scores = []
    for tau in grid:
        preds = (features @ tau_normalize(weight, float(tau)).t()).argmax(1)
        accuracy = mean_class_accuracy(preds.cpu().numpy(), labels.cpu().numpy(), n_classes)
        scores.append({"tau": float(tau), "val_accuracy": accuracy})
    best = max(scores, key=lambda row: (row["val_accuracy"], -row["tau"]))
    return best["tau"], scores


def attach_tau_norm(model: nn.Module, tau: float) -> nn.Module:
    check_decouplable(model)
    freeze(model)
    model.classifier = TauNormClassifier(classifier_weight(model.classifier), tau)
    return model.classifier


# ---------------------------------------------------------------- post-hoc logit adjustment


class AdjustedClassifier(nn.Module):
    """The frozen classifier's logits minus ``tau * log prior`` (Menon et al. 2021, post-hoc)."""

    def __init__(self, classifier: nn.Module, log_prior: torch.Tensor, tau: float):
        super().__init__()
        self.base = classifier
        self.tau = float(tau)
        self.register_buffer("offset", (self.tau * log_prior.detach().float()).to(classifier_weight(classifier).device))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.base(features)
        return logits - self.offset.to(logits.dtype)


def adjusted_logits(logits: torch.Tensor, log_prior: torch.Tensor, tau: float) -> torch.Tensor:
    return logits - float(tau) * log_prior.to(logits.dtype)


def select_adjustment_tau(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor, grid,
                          n_classes: int) -> tuple[float, list[dict]]:
    """The tau in ``grid`` whose adjusted (validation) ``logits`` have the best mean per-class
    accuracy; ties go to the smaller tau. Returns (tau, [{"tau", "val_accuracy"}, ...])."""
    scores = []
    for tau in grid:
        preds = adjusted_logits(logits, log_prior, tau).argmax(1)
        accuracy = mean_class_accuracy(preds.cpu().numpy(), labels.cpu().numpy(), n_classes)
        scores.append({"tau": float(tau), "val_accuracy": accuracy})
    best = max(scores, key=lambda row: (row["val_accuracy"], -row["tau"]))
    return best["tau"], scores


def attach_adjustment(model: nn.Module, log_prior: torch.Tensor, tau: float) -> nn.Module:
    """Post-hoc logit adjustment: the frozen model's classifier wrapped to subtract ``tau * log prior``."""
    check_decouplable(model)
    freeze(model)
    model.classifier = AdjustedClassifier(model.classifier, log_prior, tau)
    return model.classifier


# ---------------------------------------------------------------- weight balancing: MaxNorm


def max_norm_bound(weight: torch.Tensor, thresh: float) -> float:
    """The MaxNorm radius of the weight-balancing code (``MaxNorm_via_PGD.setPerLayerThresh``):
    ``min + thresh * (max - min)`` of the class rows' L2 norms."""
    norms = weight.detach().float().norm(dim=1)
    return float(norms.min() + thresh * (norms.max() - norms.min()))


@torch.no_grad()
def project_max_norm(weight: torch.Tensor, bound: float) -> None:
    """Each class row of ``weight`` with an L2 norm above ``bound`` scaled back onto it, in place."""
    norms = weight.norm(dim=1, keepdim=True)
    weight.mul_(torch.clamp(bound / norms.clamp_min(1e-12), max=1.0))


class MaxNormSGD(torch.optim.SGD):
    """SGD whose every step ends with the MaxNorm projection of ``constrained`` (projected
    gradient descent)."""

    def __init__(self, params, constrained: torch.Tensor, bound: float, **sgd):
        if not bound > 0:
            raise BvkitError(f"the MaxNorm bound must be > 0, got {bound}")
        super().__init__(params, **sgd)
        self.constrained, self.bound = constrained, float(bound)

    def step(self, closure=None):
        loss = super().step(closure)
        project_max_norm(self.constrained, self.bound)
        return loss


def attach_weight_balancing(model: nn.Module) -> nn.Module:
    """Weight balancing's stage two: the backbone frozen, the stage-one classifier (weight and
    bias) left to train. Returns the classifier."""
    check_decouplable(model)
    freeze(model)
    for parameter in model.classifier.parameters():
        parameter.requires_grad_(True)
    return model.classifier
