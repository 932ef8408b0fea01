"""SADE (Zhang et al., NeurIPS 2022): RIDE's backbone (shared stem + stage 1, per-expert stages
2-3 with cosine classifiers) whose output aggregates the experts' logits with weights learned
after training (``bvkit.train.aggregation``, test-time self-supervised aggregation).

:class:`SadeNet` is a :class:`bvkit.models.ride.RideNet` with one more buffer,
``expert_weights`` (E,), a convex combination (>= 0, sum 1), uniform until the test-time stage
sets it: ``logits = sum_e w_e * z_e``. Everything else, ``forward_experts``' per-expert logits
included, is RIDE's, so the run writes ``expert_logits`` like every multi-expert model.
"""

from __future__ import annotations

import torch

from bvkit.errors import BvkitError
from bvkit.models.registry import register_model
from bvkit.models.ride import RideNet, ride_resnet_cifar


class SadeNet(RideNet):
    """A RIDE network whose output is the ``expert_weights``-weighted sum of its experts' logits."""

    @classmethod
    def adopt(cls, model: RideNet) -> "SadeNet":
        """``model`` (its modules and weights as built) as a SadeNet with uniform expert weights."""
        if type(model) is not RideNet:
            raise BvkitError(f"SADE builds on a RideNet, got {type(model).__name__}")
        model.__class__ = cls
        device = model.classifier.weight.device
        model.register_buffer("expert_weights", torch.full((model.num_experts,), 1.0 / model.num_experts, device=device))
        return model

    def set_expert_weights(self, weights: torch.Tensor) -> None:
        """Set the aggregation weights: E values >= 0 summing to 1."""
        weights = torch.as_tensor(weights, dtype=torch.float32).detach().reshape(-1)
        if weights.numel() != self.num_experts or bool((weights < 0).any()) or abs(float(weights.sum()) - 1.0) > 1e-4:
            raise BvkitError(f"expert weights must be {self.num_experts} values >= 0 summing to 1, got {weights.tolist()}")
        self.expert_weights.copy_(weights.to(self.expert_weights.device))

    def aggregate(self, expert_logits: torch.Tensor) -> torch.Tensor:
        """(B, C): the weighted sum of the used experts' logits (E', B, C); with fewer experts
        used than built (``experts_used``), their weights renormalised."""
        weights = self.expert_weights[: expert_logits.shape[0]]
        weights = (weights / weights.sum()).to(expert_logits.dtype)
        # elementwise, not einsum: autocast leaves it in the logits' float32 (as RIDE's mean)
        return (weights.view(-1, 1, 1) * expert_logits).sum(dim=0)

    def forward_experts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward_experts(x)
        out["logits"] = self.aggregate(out["expert_logits"])
        return out


def sade_resnet_cifar(n_classes: int, num_experts: int = 3, **ride_kw) -> SadeNet:
    """SADE's CIFAR network: RIDE ResNet-32 (``ride_resnet_cifar``; 24 / 48 channels per
    expert with ``reduce_dimension``, cosine classifiers scaled by 30) with expert weights."""
    return SadeNet.adopt(ride_resnet_cifar(n_classes, num_experts=num_experts, **ride_kw))


register_model("sade-resnet32", tags=("cifar", "ride"))(sade_resnet_cifar)
