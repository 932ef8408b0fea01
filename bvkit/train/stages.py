"""Second stages on the trained stage-one model, one function per ``Stage.kind`` in ``STAGES``:
tau-norm, cRT and LWS on frozen features (``bvkit.train.decoupled``) and RIDE's routers
(``bvkit.train.routing``); see ``docs/recipes.md``.

A stage function takes ``(model, stage, run)`` and returns the routed model when it builds
one (the routing stage), else None. Every trained stage is one :class:`bvkit.train.loop.Phase`,
checkpointed per epoch and resumed like stage one; it is not sharded under DDP (small heads
on frozen features: every rank takes the whole batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bvkit.methods import Recipe, Stage
from bvkit.registry import Registry
from bvkit.train import ddp
from bvkit.train.builders import make_optimizer
from bvkit.train.decoupled import attach_crt, attach_lws, attach_tau_norm, classifier_weight, select_tau
from bvkit.train.evaluation import validation_record
from bvkit.train.loop import LoopContext, Phase, derive_seed, run_phase, set_frozen_modes
from bvkit.train.outputs import resume_phase, save_final_checkpoint
from bvkit.train.routing import attach_routers, routing_loss
from bvkit.train.schedule import Schedule

STAGES: Registry[Callable] = Registry("stage")


@dataclass
class StageRun:
    """What a second stage works with besides the model: the run's recipe, data and seed, the
    stage's index (1-based), the loop context, the payload when this stage is resumed, and the
    run's extra metrics (a stage adds its own keys)."""

    recipe: Recipe
    data: Any
    seed: int
    index: int
    ctx: LoopContext
    payload: dict | None
    metrics: dict

    @property
    def num_classes(self) -> int:
        return len(self.data.class_names)


def run_stages(model: nn.Module, recipe: Recipe, data, seed: int, ctx: LoopContext, payload: dict | None,
               checkpoint_extra: dict, metrics: dict) -> nn.Module | None:
    """The recipe's second stages in order on ``model``; the routed model if one was built."""
    routed = None
    for index, stage in enumerate(recipe.stages, start=1):
        resumed = payload if payload is not None and payload["stage"] == index else None
        ctx.checkpoint_extra = {**checkpoint_extra, "stage_epochs": stage.epochs}
        run = StageRun(recipe, data, seed, index, ctx, resumed, metrics)
        routed = STAGES.get(stage.kind)(model, stage, run) or routed
    return routed


@STAGES.decorator("tau-norm")
def tau_norm(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """The classifier's rows divided by their norm to the tau (of ``tau_grid``) that is best on
    the validation features; nothing is trained, the final model is saved directly."""
    grid = stage.options.get("tau_grid", [round(0.1 * i, 1) for i in range(11)])
    if run.payload is not None and "tau" in run.payload:
        tau, scores = float(run.payload["tau"]), None
    else:
        model.eval()
        with torch.no_grad():
            features = run.data.predict(model.forward_features, "val")["logits"]
        weight = classifier_weight(model.classifier).detach().float().cpu()
        tau, scores = select_tau(features, torch.from_numpy(run.data.labels("val")), weight, grid, run.num_classes)
    attach_tau_norm(model, tau)
    run.metrics.update(tau=tau, tau_grid=scores)
    run.ctx.checkpoint_extra["tau"] = tau
    if run.ctx.out is not None and ddp.is_main():
        save_final_checkpoint(run.ctx.out, model, stage=run.index, stage_name=stage.kind, epoch=0,
                              history=run.ctx.history, device=run.ctx.device, **run.ctx.checkpoint_extra)


@STAGES.decorator("crt")
def crt(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """Classifier re-training: a fresh (seeded) linear classifier on the frozen features."""
    head = attach_crt(model, run.num_classes, derive_seed(run.seed, run.index))
    _train_head(model, head, nn.CrossEntropyLoss(), stage, run)


@STAGES.decorator("lws")
def lws(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """Learnable weight scaling: one scale per class on the frozen classifier."""
    head = attach_lws(model, run.num_classes)
    _train_head(model, head, nn.CrossEntropyLoss(), stage, run)


@STAGES.decorator("routing")
def routing(model: nn.Module, stage: Stage, run: StageRun) -> nn.Module:
    """RIDE's expert assignment: routers trained on the frozen experts; returns the routed model."""
    routed, routers = attach_routers(model, run.recipe, stage, run.num_classes, derive_seed(run.seed, run.index),
                                     run.ctx.device)
    _train_head(routed, routers, routing_loss(stage), stage, run, forward=routed.forward_experts,
                count_correct=False)
    return routed


def _train_head(model, head, loss, stage: Stage, run: StageRun, forward=None, count_correct=True) -> None:
    optimizer = make_optimizer([p for p in head.parameters() if p.requires_grad], stage.lr, stage.momentum,
                               stage.nesterov, stage.weight_decay)
    loader = run.data.train_loader(stage.batch_size, stage.balanced, derive_seed(run.seed, run.index), shard=False)
    schedule = Schedule(kind=stage.schedule, epochs=stage.epochs, steps_per_epoch=len(loader))
    phase = Phase(stage.kind, run.index, model, forward or model, loss, optimizer, loader, schedule, stage.lr,
                  set_modes=lambda: set_frozen_modes(model, None), count_correct=count_correct, shard=False)
    start = resume_phase(phase, run.payload)
    validate_forward = model.route if hasattr(model, "route") else model
    run.ctx.validate = lambda: validation_record(run.data, validate_forward)
    run_phase(phase, stage.epochs, run.ctx, start_epoch=start)
