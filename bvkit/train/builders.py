"""What a recipe builds for training: its model, loss, teacher, training forward, optimiser and
learning-rate schedule (``docs/recipes.md``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.losses import create_loss
from bvkit.methods import Recipe
from bvkit.models import create_model
from bvkit.train import ddp
from bvkit.train.checkpoint import load_checkpoint, load_state
from bvkit.train.loop import freeze
from bvkit.train.schedule import Schedule, ride_schedule, time_map


def build_model(recipe: Recipe, n_classes: int, in_channels: int, seed: int, device: torch.device) -> nn.Module:
    """The recipe's model, initialised from ``seed`` without touching the global RNG."""
    kwargs = dict(recipe.model_kwargs)
    kwargs.setdefault("in_channels", in_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = create_model(recipe.model, n_classes, **kwargs)
        except TypeError as err:
            raise BvkitError(f"model {recipe.model}: {err}") from None
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def build_loss(recipe: Recipe, class_counts: np.ndarray, device: torch.device) -> nn.Module:
    """The recipe's loss; its DRW / temperature-switch epoch scaled like the lr milestones."""
    kwargs = dict(recipe.loss_kwargs)
    if recipe.drw_epoch is not None:
        kwargs.setdefault("drw_epoch", recipe_time_map(recipe)(recipe.drw_epoch))
    elif recipe.loss.startswith("ride"):
        kwargs.setdefault("drw_epoch", None)  # RIDE losses: no DRW and no class-wise temperature
    return create_loss(recipe.loss, class_counts, **kwargs).to(device)


def load_teacher(recipe: Recipe, device: torch.device) -> nn.Module | None:
    """The frozen teacher of a distilling recipe (its stage-one model), in eval mode; None without one."""
    if recipe.teacher is None:
        return None
    if not recipe.teacher:
        raise BvkitError(f"method {recipe.name} needs a teacher checkpoint (--teacher CKPT)")
    payload = load_checkpoint(recipe.teacher)
    teacher_recipe = Recipe.from_dict(payload["recipe"])
    teacher = build_model(teacher_recipe, payload["num_classes"], payload["in_channels"], 0, device)
    state = payload["model"] if payload.get("stage") == 0 else payload["stage_one_model"]
    load_state(teacher, state, "teacher")
    teacher.eval()
    freeze(teacher)
    return teacher


def training_forward(model: nn.Module, recipe: Recipe, teacher: nn.Module | None = None):
    """Stage one's forward: DDP-wrapped where a process group is active, per-expert logits for
    RIDE's loss, the teacher's logits added for a distilling loss."""
    trained = ddp.wrap(ExpertsForward(model) if recipe.is_ride else model)
    if teacher is None:
        return trained

    def forward(x):
        output = dict(trained(x))
        with torch.no_grad():
            output["teacher_logits"] = teacher(x).float()
        return output

    return forward


class ExpertsForward(nn.Module):
    """RIDE's training forward (per-expert logits for the loss) as a module DDP can wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_experts(x)


def make_optimizer(params, lr: float, momentum: float, nesterov: bool, weight_decay: float):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def recipe_schedule(recipe: Recipe, steps_per_epoch: int) -> Schedule:
    """Stage one's lr schedule: the recipe's milestones scaled to its epochs."""
    return ride_schedule(
        recipe.epochs,
        steps_per_epoch,
        kind=recipe.schedule,
        warmup_epochs=recipe.warmup_epochs,
        milestones=tuple(recipe.lr_milestones),
        factors=tuple(recipe.lr_factors),
        reference_epochs=recipe.reference_epochs,
        scaling=recipe.schedule_scaling,
    )


def recipe_time_map(recipe: Recipe):
    """``epoch -> epoch``: the recipe's reference milestones moved to its epochs, by its
    ``schedule_scaling`` rule (the lr drops, warm-up and DRW switch move together)."""
    first = recipe.lr_milestones[0] if recipe.lr_milestones and recipe.schedule == "step" else None
    return time_map(recipe.epochs, recipe.reference_epochs, first, recipe.schedule_scaling)
