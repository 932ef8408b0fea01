"""A lab's own method as a bvkit plugin: the vector-scaling (VS) loss of Kini et al.
(NeurIPS 2021, "Label-imbalanced and group-sensitive classification under overparameterization"),
CE on ``delta_y * z_y + iota_y`` with ``delta_c = (n_c / n_max) ** gamma`` (multiplicative,
favouring the tail) and ``iota_c = tau * log(pi_c)`` (additive, as logit adjustment), used for
training only; the model's own logits are what it predicts with.

A study names this module (``plugins = ["lab_methods"]``; bvkit looks in the spec's folder
first), and bvkit imports it in every process before anything trains. Registering a name
bvkit already has is an error unless ``overwrite=True``.
"""

import torch
import torch.nn.functional as F

from bvkit.losses import LongTailLoss, register_loss
from bvkit.methods import Recipe, register_method


class VectorScalingLoss(LongTailLoss):
    """VS loss: ``CE(delta * logits + iota, target)``."""

    def __init__(self, class_counts, gamma: float = 0.2, tau: float = 1.0, **kw):
        super().__init__(class_counts, **kw)
        counts = self.class_counts
        self.register_buffer("delta", (counts / counts.max()) ** float(gamma))
        self.register_buffer("iota", float(tau) * torch.log(counts / counts.sum()))

    def loss(self, logits, target):
        scaled = logits.float() * self.delta + self.iota
        return F.cross_entropy(scaled, target, weight=self.weights_for(scaled))


def _vs(class_counts, **kw):
    return VectorScalingLoss(class_counts, **kw)


_vs.loss_class = VectorScalingLoss  # a loss on logits: RIDE may use it as its experts' base loss
register_loss("vs", _vs)
register_method(Recipe("vs", "vector-scaling loss (Kini et al. 2021), gamma 0.2, tau 1.0", loss="vs",
                       nesterov=False))
