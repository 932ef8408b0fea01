"""Losses on logits (B, C): the ``LongTailLoss`` base (class-balanced weights always on or
from the DRW epoch on), CE, focal, LDAM and logit adjustment / balanced softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.losses.per_class import as_counts, class_balanced_weights, ldam_margins, log_prior


class LongTailLoss(nn.Module):
    """Base: stores ``class_counts``; optional class-balanced weights, always on ("cb") or from
    ``drw_epoch`` on ("drw")."""

    def __init__(self, class_counts, reweight: str | None = None, beta: float = 0.9999,
                 drw_epoch: int = 160):
        super().__init__()
        counts = as_counts(class_counts)
        if reweight not in (None, "cb", "drw"):
            raise BvkitError(f"unknown reweight {reweight!r} (expected None, 'cb' or 'drw')")
        self.n_classes, self.reweight, self.drw_epoch = counts.size, reweight, int(drw_epoch)
        self.register_buffer("class_counts", torch.as_tensor(counts, dtype=torch.float32))
        self.register_buffer(
            "cb_weights", torch.as_tensor(class_balanced_weights(counts, beta), dtype=torch.float32)
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def graph_key(self) -> bool:
        """What of the epoch changes the computation (a captured CUDA graph is redone on change)."""
        return self.reweighting

    @property
    def reweighting(self) -> bool:
        return self.reweight == "cb" or (self.reweight == "drw" and self.epoch >= self.drw_epoch)

    def weights_for(self, logits: torch.Tensor) -> torch.Tensor | None:
        """The active class weights in the logits' dtype (None when off)."""
        return None if not self.reweighting else self.cb_weights.to(logits.dtype)

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.dim() != 2 or logits.shape[1] != self.n_classes:
            raise BvkitError(
                f"logits must be (B, {self.n_classes}), got {tuple(logits.shape)}"
            )

    def forward(self, output, target: torch.Tensor) -> torch.Tensor:
        logits = output["logits"] if isinstance(output, dict) else output
        self._check(logits, target)
        return self.loss(logits, target)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, reweight={self.reweight}, drw_epoch={self.drw_epoch}"


class CrossEntropyLoss(LongTailLoss):
    """Softmax cross-entropy (``reweight="cb"``: CB-CE; ``"drw"``: CE-DRW)."""

    def loss(self, logits, target):
        return F.cross_entropy(logits, target, weight=self.weights_for(logits))


class FocalLoss(LongTailLoss):
    """Focal loss ``w_y (1 - p_y)**gamma * (-log p_y)``, batch mean."""

    def __init__(self, class_counts, gamma: float = 1.0, **kw):
        super().__init__(class_counts, **kw)
        if gamma < 0:
            raise BvkitError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def loss(self, logits, target):
        log_p = F.log_softmax(logits, dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
        per_sample = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.reweighting:
            per_sample = per_sample * self.weights_for(logits)[target]
        return per_sample.mean()


class LDAMLoss(LongTailLoss):
    """Label-distribution-aware margin loss: CE after lowering the target logit by ``s * m_y``."""

    def __init__(self, class_counts, max_margin: float = 0.5, s: float = 30.0, **kw):
        super().__init__(class_counts, **kw)
        if s <= 0 or max_margin < 0:
            raise BvkitError(f"LDAM needs s > 0 and max_margin >= 0, got s={s}, max_margin={max_margin}")
        self.s = float(s)
        margins = ldam_margins(self.class_counts.numpy(), max_margin)
        self.register_buffer("margins", torch.as_tensor(margins, dtype=torch.float32))

    def margin_logits(self, logits, target):
        """The logits with ``s * m_y`` taken off each sample's target logit."""
        target_margin = (self.s * self.margins[target]).to(logits.dtype).unsqueeze(1)
        return logits.scatter_add(1, target.unsqueeze(1), -target_margin)

    def loss(self, logits, target):
        return F.cross_entropy(self.margin_logits(logits, target), target, weight=self.weights_for(logits))


class LogitAdjustedLoss(LongTailLoss):
    """Balanced softmax / logit adjustment: CE on ``logits + tau * log prior`` (training only)."""

    def __init__(self, class_counts, tau: float = 1.0, **kw):
        super().__init__(class_counts, **kw)
        if not tau >= 0:
            raise BvkitError(f"logit adjustment needs tau >= 0, got {tau}")
        self.tau = float(tau)
        self.register_buffer("log_prior", torch.as_tensor(log_prior(self.class_counts.numpy()), dtype=torch.float32))

    def loss(self, logits, target):
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype)
        return F.cross_entropy(adjusted, target, weight=self.weights_for(logits))
