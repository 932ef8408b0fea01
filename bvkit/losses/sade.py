"""SADE's loss on its three experts' logits (Zhang et al., NeurIPS 2022)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.losses.per_class import as_counts, inverse_prior, log_prior


class SADELoss(nn.Module):
    """SADE's diverse-expert loss (Zhang et al., NeurIPS 2022; ``DiverseExpertLoss``): on the
    three experts' logits ``output["expert_logits"]`` (3, B, C), the sum of CE (forward expert),
    CE on ``z + log pi`` (uniform expert, balanced softmax) and CE on
    ``z + log pi - tau * log pi_inv`` (backward expert, ``inverse_prior``), tau = 2."""

    def __init__(self, class_counts, tau: float = 2.0):
        super().__init__()
        if not tau >= 0:
            raise BvkitError(f"SADE's backward expert needs tau >= 0, got {tau}")
        counts = as_counts(class_counts)
        self.n_classes, self.tau = counts.size, float(tau)
        self.register_buffer("log_prior", torch.as_tensor(log_prior(counts), dtype=torch.float32))
        self.register_buffer("log_inverse_prior", torch.as_tensor(np.log(inverse_prior(counts)), dtype=torch.float32))

    def set_epoch(self, epoch: int) -> None:
        """No epoch dependence."""

    def graph_key(self) -> None:
        return None

    def expert_targets(self) -> torch.Tensor:
        """(3, C) what each expert's logits are shifted by before its CE."""
        zero = torch.zeros_like(self.log_prior)
        return torch.stack([zero, self.log_prior, self.log_prior - self.tau * self.log_inverse_prior])

    def forward(self, output: dict, target: torch.Tensor) -> torch.Tensor:
        expert_logits = output["expert_logits"]
        if expert_logits.dim() != 3 or expert_logits.shape[0] != 3 or expert_logits.shape[2] != self.n_classes:
            raise BvkitError(f"SADE's loss needs the logits of 3 experts (3, B, {self.n_classes}), "
                             f"got {tuple(expert_logits.shape)}")
        shifted = expert_logits + self.expert_targets().to(expert_logits.dtype).unsqueeze(1)
        # each expert's CE is a mean over the batch: the sum of the three is 3 x the mean over the stacked rows
        return 3 * F.cross_entropy(shifted.reshape(-1, self.n_classes), target.repeat(3))
