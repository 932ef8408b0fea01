"""OLTR (Liu et al., CVPR 2019), closed-set long-tailed part, after the official code
(zhmiao/OpenLongTailRecognition-OLTR, ``run_networks.py`` and the ImageNet-LT configs).

Stage one: a plain ResNet + linear classifier trained with CE: bvkit's ``ce`` recipe as a nested
run (``out/stage1``) with this run's epochs, batch size, model size, augmentation and
validation split.

Stage two (this procedure's own phase): ``oltr-resnet32`` (``bvkit.models.oltr``) initialised
from stage one (backbone; the stage-one classifier becomes the hallucinator), its memory set to
the class means of the stage-one features over the training set (eval mode, no augmentation),
then the whole network fine-tuned with class-balanced sampling on
``CE(logits) + 0.01 * DiscCentroidsLoss(features)``. As in the official code the memory *is*
the centroid loss's learnable centroids (read detached by the forward), trained by that loss
with their own learning rate; the backbone and attention train at a tenth of the head's rate
(official: 0.01 / 0.1 / 0.01 for features / classifier / centroids).

Length: OLTR publishes no CIFAR recipe. Stage two runs ``stage2_epochs`` (100 for the
200-epoch reference, scaled with ``epochs`` like every milestone) with the official step shape
(x0.1 after a third and two thirds of stage two; ``lr_milestones`` are given for a 100-epoch
stage two and scaled to its actual length).

Differences from the official code: it keeps the epoch with the best validation accuracy,
bvkit the last (as for every method); its class-aware sampler takes 4 images of a class in a
row, bvkit's balanced sampler draws class then image for every sample; its ImageNet ResNet-10
adds a 512->512 fc layer after pooling (``use_fc``), the CIFAR ResNet here has none; its
attention's ``conv_mask`` ends up randomly initialised (see ``bvkit.models.oltr``), here it
starts at zero so the centroids are exactly the stage-one class means. The discriminative
centroid loss is complete: attraction with the official centroid update and the repelling term
(margin 10, weight 0.01).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.train.builders import build_model
from bvkit.train.data import make_loader
from bvkit.train.evaluation import evaluate_accuracy
from bvkit.train.loop import Phase, derive_seed, predict
from bvkit.train.procedures import ProcedureEnv, register_procedure
from bvkit.train.schedule import ride_schedule, scale_epoch

STAGE1_METHOD = "ce"
STAGE2_REFERENCE_EPOCHS = 100  # the frame of the recipe's lr_milestones for stage two
OPTIONS = ("stage2_epochs", "feature_lr_scale", "centroids_lr_scale", "feature_loss_weight")
BACKBONE_KWARGS = ("width", "blocks", "in_channels", "channels_last")  # shared with stage one's ResNet


class _CentroidAttraction(torch.autograd.Function):
    """The official ``DiscCentroidsLossFunc``: ``sum_i ||f_i - c_{y_i}||^2 / 2 / B``.

    Features get the true gradient; the centroids get the center-loss update instead,
    ``sum_{i: y_i = c} (c - f_i) / (1 + n_c) / B``, not scaled by the loss's weight (the official
    backward ignores ``grad_output`` for the centroids)."""

    @staticmethod
    def forward(ctx, features, labels, centroids):
        diff = centroids.index_select(0, labels) - features
        ctx.save_for_backward(diff, labels)
        ctx.n_classes = centroids.shape[0]
        return diff.pow(2).sum() / (2.0 * len(labels))

    @staticmethod
    def backward(ctx, grad_output):
        diff, labels = ctx.saved_tensors
        batch = len(labels)
        counts = torch.ones(ctx.n_classes, device=diff.device, dtype=diff.dtype)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=diff.dtype))
        grad_centroids = torch.zeros(ctx.n_classes, diff.shape[1], device=diff.device, dtype=diff.dtype)
        grad_centroids.index_add_(0, labels, diff)
        return -grad_output * diff / batch, None, grad_centroids / counts[:, None] / batch


def disc_centroids_loss(features: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor,
                        margin: float = 10.0, repel_weight: float = 0.01) -> torch.Tensor:
    """The official ``DiscCentroidsLoss``: attraction to the own class's centroid plus
    ``repel_weight * max(0, margin - sum_{i, c != y_i} ||f_i - c_c||^2 / (B C))``, in float32."""
    with torch.autocast(features.device.type, enabled=False):
        features, centroids = features.float(), centroids.float()
        attract = _CentroidAttraction.apply(features, labels, centroids)
        squared = (features.pow(2).sum(1, keepdim=True) + centroids.pow(2).sum(1)[None]
                   - 2 * features @ centroids.T)
        own = labels[:, None] == torch.arange(len(centroids), device=labels.device)
        mean_other = squared.masked_fill(own, 0.0).sum() / squared.numel()
        return attract + repel_weight * torch.clamp(margin - mean_other, 0.0, 1e6)


class OLTRLoss(nn.Module):
    """``CE(logits, y) + feature_weight * disc_centroids_loss(features, y, centroids)`` of the
    stage-two output dict (``logits``, ``features``, ``centroids``)."""

    def __init__(self, feature_weight: float = 0.01):
        super().__init__()
        self.feature_weight = feature_weight

    def forward(self, output: dict, targets: torch.Tensor) -> torch.Tensor:
        feature_loss = disc_centroids_loss(output["features"], targets, output["centroids"])
        return F.cross_entropy(output["logits"], targets) + self.feature_weight * feature_loss


class GroupScaledSGD(torch.optim.SGD):
    """SGD whose parameter groups train at ``lr * lr_scale``: the loop sets one learning rate
    for all groups every step, OLTR trains its parts at different rates."""

    def step(self, closure=None):
        base = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] = group["lr"] * group["lr_scale"]
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, base):
                group["lr"] = lr


@torch.no_grad()
def class_centroids(model: nn.Module, env: ProcedureEnv) -> torch.Tensor:
    """Per-class mean of ``model.forward_features`` over the training set (eval mode, no
    augmentation), (C, d) on the model's device; the official ``centroids_cal``."""
    model.eval()
    features = predict(model.forward_features, env.train_set.x, env.normalizer, env.device,
                       precision=env.precision)["logits"]
    labels = env.train_set.y.cpu()
    counts = torch.bincount(labels, minlength=env.n_classes)
    if (counts == 0).any():
        raise BvkitError(f"OLTR's memory needs a training image of every class; class "
                         f"{int(torch.nonzero(counts == 0)[0])} has none")
    sums = torch.zeros(env.n_classes, features.shape[1]).index_add_(0, labels, features)
    return (sums / counts[:, None]).to(env.device)


def stage_one_overrides(env: ProcedureEnv) -> dict:
    """The settings stage one shares with this run: length, batch, model size, data handling."""
    recipe = env.recipe
    backbone = {key: value for key, value in recipe.model_kwargs.items() if key in BACKBONE_KWARGS}
    return {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "model_kwargs": backbone,
            "augment": dict(recipe.augment), "val_per_class": recipe.val_per_class}


def _options(env: ProcedureEnv) -> dict:
    options = env.options()
    missing, unknown = set(OPTIONS) - set(options), set(options) - set(OPTIONS)
    if missing or unknown:
        raise BvkitError(f"oltr procedure_kwargs: missing {sorted(missing)}, unknown {sorted(unknown)} "
                         f"(known: {', '.join(OPTIONS)})")
    if int(options["stage2_epochs"]) < 1:
        raise BvkitError(f"oltr: stage2_epochs must be >= 1, got {options['stage2_epochs']}")
    return options


def _param_groups(model: nn.Module, options: dict) -> list[dict]:
    """Backbone + attention, meta-embedding head, centroids: the official three learning rates."""
    meta = model.meta
    head = [p for name, p in meta.named_parameters() if name != "centroids"]
    features = [*model.stem.parameters(), *model.stages.parameters(), *model.attention.parameters()]
    return [
        {"params": features, "lr_scale": float(options["feature_lr_scale"])},
        {"params": head, "lr_scale": 1.0},
        {"params": [meta.centroids], "lr_scale": float(options["centroids_lr_scale"])},
    ]


@register_procedure("oltr")
def oltr(env: ProcedureEnv) -> nn.Module:
    """Stage one (``ce``) as a nested run, then OLTR's stage two; returns the stage-two model."""
    recipe = env.recipe
    options = _options(env)
    stage2_epochs = max(1, scale_epoch(int(options["stage2_epochs"]), recipe.epochs, recipe.reference_epochs))
    if not recipe.model.startswith("oltr"):
        raise BvkitError(f"method {recipe.name} needs an OLTR model such as oltr-resnet32, got {recipe.model}")
    size = env.train_set.x.shape[-2:]
    if size[0] != size[1]:
        raise BvkitError(f"OLTR's spatial attention needs square images, got {size[0]}x{size[1]}")
    model_recipe = replace(recipe, model_kwargs={**recipe.model_kwargs, "input_size": int(size[0])})
    model = build_model(model_recipe, env.n_classes, env.in_channels, derive_seed(env.seed, 1), env.device)
    stage_one = env.subrun("stage1", STAGE1_METHOD, **stage_one_overrides(env))
    resuming = env.payload is not None and env.payload.get("stage") == 0
    if not resuming:  # a resumed stage two takes its centroids (and all else) from the checkpoint
        model.load_stage_one(stage_one.model.state_dict())
        with torch.no_grad():
            model.centroids.copy_(class_centroids(model, env))

    loss = OLTRLoss(float(options["feature_loss_weight"]))
    optimizer = GroupScaledSGD(_param_groups(model, options), lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    loader = make_loader(env.train_set, recipe.batch_size, recipe.balanced, env.augment, derive_seed(env.seed, 1))
    schedule = ride_schedule(stage2_epochs, len(loader), kind=recipe.schedule, warmup_epochs=recipe.warmup_epochs,
                             milestones=tuple(recipe.lr_milestones), factors=tuple(recipe.lr_factors),
                             reference_epochs=STAGE2_REFERENCE_EPOCHS)
    phase = Phase(
        "stage2", 0, model,
        forward=lambda x: {**model.forward_train(x), "centroids": model.centroids},
        loss=loss, optimizer=optimizer, loader=loader, schedule=schedule, base_lr=recipe.lr,
        set_modes=model.train,
        shard=False,  # not DDP-wrapped: every rank takes the whole batch, so the ranks stay identical
        validate=lambda: evaluate_accuracy(model, env.val_set, env.normalizer, env.device, env.n_classes,
                                           precision=env.precision),
        precision=env.precision,
    )
    env.run(phase, stage2_epochs)
    env.metrics.update(stage2_epochs=stage2_epochs, stage1_accuracy=stage_one.metrics["accuracy"])
    return model
