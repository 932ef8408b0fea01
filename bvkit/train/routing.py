"""RIDE stage two (expert assignment): routers trained on a frozen stage-one RIDE model.

The routers and routed inference are ``bvkit.models.router``'s; this module builds them for a
recipe stage (options ``top_k`` = 30, ``pos_weight`` = 100, ``neg_weight`` = 1) and the
weighted BCE routing loss (``bvkit.losses``'s "routing").
"""

from __future__ import annotations

import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.methods import Recipe, Stage

ROUTING_OPTIONS = ("top_k", "pos_weight", "neg_weight")


def attach_routers(model: nn.Module, recipe: Recipe, stage: Stage, n_classes: int, seed: int,
                   device: torch.device):
    """(RoutedRide around the frozen ``model``, its trainable router), the router seeded."""
    from bvkit.models.router import ExpertRouter, RoutedRide

    if not hasattr(model, "num_experts") or not hasattr(model, "expert_outputs"):
        raise BvkitError(f"routing needs a RIDE model, got {recipe.model}")
    unknown = set(stage.options) - set(ROUTING_OPTIONS)
    if unknown:
        raise BvkitError(f"unknown routing option(s) {', '.join(sorted(unknown))}; known: {', '.join(ROUTING_OPTIONS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        router = ExpertRouter(model.num_experts, model.num_features, n_classes,
                              top_k=int(stage.options.get("top_k", 30)))
    routed = RoutedRide(model, router.to(device))
    return routed, routed.router


def routing_loss(stage: Stage) -> nn.Module:
    from bvkit.losses import create_loss

    weights = {key: float(stage.options[key]) for key in ("pos_weight", "neg_weight") if key in stage.options}
    return create_loss("routing", None, **weights)
