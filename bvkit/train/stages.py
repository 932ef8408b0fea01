"""Second stages on the trained stage-one model, one function per ``Stage.kind`` in ``STAGES``:
tau-norm, cRT, LWS, the post-hoc logit adjustment and weight balancing's MaxNorm fine-tuning on
frozen features (``bvkit.train.decoupled``), RIDE's routers (``bvkit.train.routing``) and SADE's
test-time aggregation of its experts (``bvkit.train.aggregation``: it reads the test images,
never their labels); see ``docs/recipes.md``.

A stage function takes ``(model, stage, run)`` and returns the routed model when it builds
one (the routing stage), else None. Every trained stage is one :class:`bvkit.train.loop.Phase`,
checkpointed per epoch and resumed like stage one; it is not sharded under DDP (small heads
on frozen features: every rank takes the whole batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.losses import create_loss, log_prior
from bvkit.methods import Recipe, Stage
from bvkit.registry import Registry
from bvkit.train import ddp
from bvkit.train.builders import make_optimizer
from bvkit.train.aggregation import learn_aggregation
from bvkit.train.decoupled import (
    MaxNormSGD,
    attach_adjustment,
    attach_crt,
    attach_lws,
    attach_tau_norm,
    attach_weight_balancing,
    classifier_weight,
    max_norm_bound,
    select_adjustment_tau,
    select_tau,
)
from bvkit.train.evaluation import validation_record
from bvkit.train.loop import EpochRecord, LoopContext, Phase, derive_seed, format_record, train_phase, set_frozen_modes
from bvkit.train.outputs import resume_phase, save_final_checkpoint
from bvkit.train.routing import attach_routers, routing_loss
from bvkit.train.schedule import Schedule

STAGES: Registry[Callable] = Registry("stage")


@dataclass
class StageRun:
    """What a second stage works with besides the model: the run's recipe, data and seed, the
    stage's index (1-based), the run's loop context, the payload when this stage is resumed,
    the run's extra metrics (a stage adds its own keys) and the stage's own checkpoint keys."""

    recipe: Recipe
    data: Any
    seed: int
    index: int
    ctx: LoopContext
    payload: dict | None
    metrics: dict
    checkpoint_extra: dict

    @property
    def n_classes(self) -> int:
        return len(self.data.class_names)


def train_stages(model: nn.Module, recipe: Recipe, data, seed: int, ctx: LoopContext, payload: dict | None,
               checkpoint_extra: dict, metrics: dict) -> nn.Module | None:
    """The recipe's second stages in order on ``model``; the routed model if one was built.
    ``checkpoint_extra``: what each stage's checkpoints add (the stage-one model)."""
    routed = None
    for index, stage in enumerate(recipe.stages, start=1):
        resumed = payload if payload is not None and payload["stage"] == index else None
        run = StageRun(recipe, data, seed, index, ctx, resumed, metrics,
                       {**checkpoint_extra, "stage_epochs": stage.epochs})
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
        tau, scores = select_tau(features, torch.from_numpy(run.data.labels("val")), weight, grid, run.n_classes)
    attach_tau_norm(model, tau)
    run.metrics.update(tau=tau, tau_grid=scores)
    run.checkpoint_extra["tau"] = tau
    _save_untrained_stage(model, stage, run)


@STAGES.decorator("crt")
def crt(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """Classifier re-training: a fresh (seeded) linear classifier on the frozen features."""
    head = attach_crt(model, run.n_classes, derive_seed(run.seed, run.index))
    _train_head(model, head, nn.CrossEntropyLoss(), stage, run)


@STAGES.decorator("lws")
def lws(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """Learnable weight scaling: one scale per class on the frozen classifier."""
    head = attach_lws(model, run.n_classes)
    _train_head(model, head, nn.CrossEntropyLoss(), stage, run)


@STAGES.decorator("routing")
def routing(model: nn.Module, stage: Stage, run: StageRun) -> nn.Module:
    """RIDE's expert assignment: routers trained on the frozen experts; returns the routed model."""
    routed, routers = attach_routers(model, run.recipe, stage, run.n_classes, derive_seed(run.seed, run.index),
                                     run.ctx.device)
    _train_head(routed, routers, routing_loss(stage), stage, run, forward=routed.forward_experts,
                count_correct=False)
    return routed


@STAGES.decorator("posthoc-adjust")
def posthoc_adjust(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """Menon et al.'s post-hoc logit adjustment: the logits minus ``tau * log prior`` (the run's
    training counts), tau (of ``tau_grid``) best on the validation split; nothing is trained."""
    grid = stage.options.get("tau_grid", [round(0.1 * i, 1) for i in range(21)])
    prior = torch.as_tensor(log_prior(np.asarray(run.data.train_counts)), dtype=torch.float32)
    if run.payload is not None and "tau" in run.payload:
        tau, scores = float(run.payload["tau"]), None
    else:
        model.eval()
        with torch.no_grad():
            logits = run.data.predict(model, "val")["logits"]
        tau, scores = select_adjustment_tau(logits, torch.from_numpy(run.data.labels("val")), prior, grid,
                                            run.n_classes)
    attach_adjustment(model, prior, tau)
    run.metrics.update(tau=tau, tau_grid=scores)
    run.checkpoint_extra["tau"] = tau
    _save_untrained_stage(model, stage, run)


@STAGES.decorator("maxnorm")
def maxnorm(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """Weight balancing's stage two: the stage-one classifier fine-tuned on frozen features with
    the class-balanced loss and weight decay, each class's weight row kept within the MaxNorm
    bound (``max_norm``, else ``min + thresh * (max - min)`` of the stage-one rows' norms)."""
    head = attach_weight_balancing(model)
    weight = classifier_weight(head)
    bound = stage.options.get("max_norm")
    if bound is None:  # from the stage-one classifier (loaded again on a resume before the stage's state)
        bound = max_norm_bound(weight, float(stage.options.get("thresh", 0.1)))
    if not bound > 0:
        raise BvkitError(f"the MaxNorm bound must be > 0, got {bound} (the stage-one class norms are all equal "
                         "and thresh leaves none; set maxnorm.options.max_norm)")
    loss = create_loss("cb-ce", np.asarray(run.data.train_counts), beta=float(stage.options.get("beta", 0.9999)))
    optimizer = MaxNormSGD([p for p in head.parameters() if p.requires_grad], weight, bound, lr=stage.lr,
                           momentum=stage.momentum, nesterov=stage.nesterov, weight_decay=stage.weight_decay)
    run.metrics.update(max_norm=float(bound))
    _train_head(model, head, loss.to(run.ctx.device), stage, run, optimizer=optimizer)


@STAGES.decorator("sade-tta")
def sade_tta(model: nn.Module, stage: Stage, run: StageRun) -> None:
    """SADE's test-time self-supervised aggregation: the frozen experts' weights learned on the
    UNLABELED test images (``bvkit.train.aggregation``; only the images are handed over).
    Each epoch is a history row (loss: minus the views' cosine similarity); the weights go to
    ``metrics.json`` (``expert_weights``) and the model's ``expert_weights`` buffer."""
    if not hasattr(model, "set_expert_weights"):
        raise BvkitError(f"the sade-tta stage needs a SADE model (sade-resnet32), got {run.recipe.model}")
    if run.payload is not None and "expert_weights" in run.payload:
        weights, epochs_run = torch.tensor(run.payload["expert_weights"]), int(run.payload.get("tta_epochs", 0))
    else:
        images = unlabeled_test_images(run.data)
        model.eval()
        augment = run.data.augment

        def experts(x):
            return model.forward_experts(x)["expert_logits"]

        def on_epoch(row):
            record = EpochRecord(stage=stage.kind, epoch=row["epoch"], loss=row["loss"], accuracy=None, lr=stage.lr,
                                 images_per_s=row["images"] / max(row["seconds"], 1e-9), seconds=round(row["seconds"], 2))
            run.ctx.history.append(record.__dict__)
            if run.ctx.on_epoch is not None and ddp.is_main():
                run.ctx.on_epoch(record.__dict__)
            if run.ctx.log is not None and ddp.is_main():
                run.ctx.log(format_record(record, stage.epochs) + " weights " + " ".join(f"{w:.3f}" for w in row["weights"]))

        options = {key: float(stage.options[key]) for key in ("min_weight", "jitter", "jitter_p", "grayscale_p")
                   if key in stage.options}
        weights, rows = learn_aggregation(experts, images, model.num_experts, epochs=stage.epochs,
                                          batch_size=stage.batch_size, lr=stage.lr, momentum=stage.momentum,
                                          nesterov=stage.nesterov, weight_decay=stage.weight_decay,
                                          seed=derive_seed(run.seed, run.index), mean=augment.mean, std=augment.std,
                                          on_epoch=on_epoch, **options)
        epochs_run = len(rows)
    model.set_expert_weights(weights)
    run.metrics.update(expert_weights=[float(w) for w in weights], tta_epochs=epochs_run)
    run.checkpoint_extra.update(expert_weights=[float(w) for w in weights], tta_epochs=epochs_run)
    _save_untrained_stage(model, stage, run, epoch=epochs_run)


def unlabeled_test_images(data) -> torch.Tensor:
    """The run's test images, uint8 (N, C, H, W) on its device, and nothing else: what SADE's
    test-time stage may see. Device-held (CIFAR-style) data only."""
    part = data.part("test") if hasattr(data, "part") else None
    images = getattr(part, "x", None)
    if not isinstance(images, torch.Tensor):
        raise BvkitError(f"the sade-tta stage runs on device-held (CIFAR-style) data only, not {data.name}")
    return images


def _save_untrained_stage(model: nn.Module, stage: Stage, run: StageRun, epoch: int = 0) -> None:
    """The final checkpoint of a stage without a per-epoch loop (tau-norm, post-hoc adjustment, SADE's)."""
    if run.ctx.out is not None and ddp.is_main():
        save_final_checkpoint(run.ctx.out, model, stage=run.index, stage_name=stage.kind, epoch=epoch,
                              history=run.ctx.history, device=run.ctx.device,
                              **{**run.ctx.checkpoint_keys, **run.checkpoint_extra})


def _train_head(model, head, loss, stage: Stage, run: StageRun, forward=None, count_correct=True,
                optimizer=None) -> None:
    if optimizer is None:
        optimizer = make_optimizer([p for p in head.parameters() if p.requires_grad], stage.lr, stage.momentum,
                                   stage.nesterov, stage.weight_decay)
    loader = run.data.train_loader(stage.batch_size, stage.balanced, derive_seed(run.seed, run.index), shard=False)
    schedule = Schedule(kind=stage.schedule, epochs=stage.epochs, steps_per_epoch=len(loader))
    validate_forward = model.route if hasattr(model, "route") else model
    phase = Phase(stage.kind, run.index, model, forward or model, loss, optimizer, loader, schedule, stage.lr,
                  set_modes=lambda: set_frozen_modes(model, None), count_correct=count_correct, shard=False,
                  validate=lambda: validation_record(run.data, validate_forward),
                  checkpoint_extra=run.checkpoint_extra, precision=run.data.precision)
    start = resume_phase(phase, run.payload)
    train_phase(phase, stage.epochs, run.ctx, start_epoch=start)
