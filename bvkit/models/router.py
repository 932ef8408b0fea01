"""RIDE stage two: expert-assignment routers and dynamic (routed) inference.

Router k (for the step from expert k to k+1, k = 1..n-1): expert k's pooled feature,
L2-normalised, through its own ``Linear(F -> 16) + ReLU``, concatenated after the top-K values
of the ensemble logits so far (mean of experts 1..k; K = min(top_k, C)), then one
``Linear(K + 16 -> 1)`` shared by all routers gives the routing logit ``eta_k``.
Inference: every sample uses expert 1 and goes on to expert k+1 iff ``sigmoid(eta_k) > 0.5``;
its output is the mean of the logits of the experts it used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.models.ride import RideNet


class ExpertRouter(nn.Module):
    """The ``num_experts - 1`` routers of a RIDE model."""

    def __init__(self, num_experts: int, num_features: int, n_classes: int, top_k: int = 30,
                 hidden: int = 16):
        super().__init__()
        if num_experts < 2:
            raise BvkitError("routing needs at least 2 experts")
        self.num_experts, self.top_k = num_experts, min(int(top_k), int(n_classes))
        self.hidden = nn.ModuleList(nn.Linear(num_features, hidden) for _ in range(num_experts - 1))
        self.head = nn.Linear(self.top_k + hidden, 1)

    def step(self, k: int, features: torch.Tensor, ensemble_logits: torch.Tensor) -> torch.Tensor:
        """Routing logits (B,) of router ``k`` (0-based: from expert k+1 to k+2, counted from 1)
        given expert k's pooled features (B, F) and the ensemble logits so far (B, C)."""
        hidden = F.relu(self.hidden[k](F.normalize(features, dim=-1)))
        top = ensemble_logits.topk(self.top_k, dim=-1).values
        return self.head(torch.cat([top, hidden], dim=-1)).squeeze(-1)

    def forward(self, expert_logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """All routing logits (B, E-1) from every expert's logits (E, B, C) and features
        (E, B, F): what the routing loss trains on (experts frozen)."""
        steps = torch.arange(1, expert_logits.shape[0] + 1, device=expert_logits.device)
        prefix_mean = expert_logits.cumsum(dim=0) / steps.view(-1, 1, 1).to(expert_logits.dtype)
        return torch.stack(
            [self.step(k, features[k], prefix_mean[k]) for k in range(self.num_experts - 1)], dim=1
        )


class RoutedRide(nn.Module):
    """A trained RIDE model with routers. The experts stay frozen (no gradients, BN in eval
    mode whatever ``train()`` says): only ``router`` trains."""

    def __init__(self, model: RideNet, router: ExpertRouter | None = None, top_k: int = 30):
        super().__init__()
        self.model = model
        self.router = router or ExpertRouter(
            model.num_experts, model.num_features, model.n_classes, top_k
        )
        if self.router.num_experts != model.num_experts:
            raise BvkitError("router and model disagree on the number of experts")
        model.requires_grad_(False)
        model.eval()

    @property
    def num_experts(self) -> int:
        return self.model.num_experts

    def train(self, mode: bool = True) -> RoutedRide:
        self.training = mode
        self.router.train(mode)
        self.model.eval()
        return self

    def forward_experts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen experts' outputs plus ``routing_logits`` (B, E-1), for the routing loss."""
        with torch.no_grad():
            out = self.model.forward_experts(x)
        out["routing_logits"] = self.router(out["expert_logits"], out["features"])
        return out

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dynamic inference: ``logits`` (B, C) and ``n_experts`` (B,) int64 used per sample."""
        shared = self.model.shared(x)
        features, logits = self.model.expert_outputs(shared, 0, 1)
        total = logits[0].clone()
        last_features = features[0]
        n_experts = torch.ones(x.shape[0], dtype=torch.long, device=total.device)
        active = torch.arange(x.shape[0], device=total.device)
        for k in range(1, self.num_experts):
            eta = self.router.step(k - 1, last_features, total[active] / k)
            go_on = torch.sigmoid(eta) > 0.5
            active, last_features = active[go_on], None
            if active.numel() == 0:
                break
            features, logits = self.model.expert_outputs(shared[active], k, k + 1)
            total[active] += logits[0]
            n_experts[active] += 1
            last_features = features[0]
        return {"logits": total / n_experts.unsqueeze(1).to(total.dtype), "n_experts": n_experts}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.route(x)["logits"]
