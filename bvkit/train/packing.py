"""Packed training: ``K`` runs of one method trained in lockstep as one packed network.

Each run keeps what makes it that run: its own training subset, seed (model init, data order,
augmentation draws), loss (built from its own subset's class counts), BN statistics and
optimiser state. The packed network (``bvkit.models.packed_models``) shares no parameter between
runs, so the summed loss gives every run exactly its own gradient, and SGD's momentum and
weight decay are elementwise, so one SGD over the packed tensors is ``K`` separate SGDs.
The runs of a pack therefore compute what each computes alone (tested to float tolerance).

Lockstep needs the same batches per epoch and the same batch sizes: a pack holds runs whose
training sets have the same size (``redraw``, ``bootstrap`` and the ``seeds`` scheme keep the
count; runs of other sizes are packed with their own size class, possibly alone). All runs of
a pack share the recipe, hence the lr schedule.

Data: every run's uint8 images sit on the device. At the start of an epoch each run's order
and augmentation parameters are drawn from that run's own epoch generator in exactly the order
``DeviceLoader`` + ``Augment`` draw them, then moved to the device once; each step gathers and
augments all ``K`` batches in one call. The step has no host sync (loss and accuracy
accumulate on the device, read back once per epoch). The recipe's precision as in a single run
(``bvkit.train.devices``: bf16 autocast where fast, losses in float32); on CUDA channels_last,
and ``torch.compile`` with ``compile=True``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bvkit.data import holdout_indices
from bvkit.data.loaders import crop_flip_rotate_with, normalize
from bvkit.errors import BvkitError
from bvkit.methods import Recipe, apply_overrides, create_method
from bvkit.models.packed_models import pack_models, unpack_state
from bvkit.train.builders import build_loss, build_model, make_optimizer, recipe_schedule
from bvkit.train.data import (
    CHECK_PER_CLASS,
    device_data,
    device_tensors,
    load_data,
    make_augment,
    make_loader,
    validation_split,
)
from bvkit.train.devices import RUN_PRECISION, float_outputs, resolve_device, resolve_precision, use_precision
from bvkit.train.evaluation import evaluate_model, expert_test_logits, expert_weights_of
from bvkit.train.graphs import graphed_step
from bvkit.train.loop import EpochRecord, autocast, derive_seed, format_record, prepare_batch
from bvkit.train.metrics import mean_class_accuracy
from bvkit.train.outputs import run_metrics, save_final_checkpoint, write_outputs
from bvkit.train.progress import progress_bar


@dataclass
class PackMember:
    """One run of a pack: its seed, training indices into ``data.pool`` (None: the LT set)
    and output directory (None: nothing written)."""

    seed: int = 0
    train_indices: np.ndarray | None = None
    out: str | Path | None = None


@dataclass
class PackedRunResult:
    metrics: dict
    model: torch.nn.Module
    history: list
    out: Path | None


def packable(recipe: Recipe) -> bool:
    """Recipes the packed engine trains: one stage, no teacher, a CIFAR ResNet or RIDE ResNet-32."""
    return not recipe.stages and recipe.teacher is None and recipe.procedure is None and (
        recipe.model in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet32-ldam", "ride-resnet32"))


def train_packed(
    method: str | Recipe,
    dataset: Any,
    members: list[PackMember],
    *,
    imbalance: float = 100.0,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    n_max: int | None = None,
    compile: bool = False,
    progress: bool | None = None,
    log=None,
    **overrides: Any,
) -> list[PackedRunResult]:
    """Train ``members`` (runs of ``method`` on ``dataset``) packed; one result per member, in
    order. Runs whose training sets differ in size go into separate packs of one size each.
    Each member's ``out`` gets the files a single ``bvkit.train.train`` run writes."""
    if not members:
        return []
    recipe = apply_overrides(method, overrides) if isinstance(method, Recipe) else create_method(method, **overrides)
    if not packable(recipe):
        raise BvkitError(f"method {recipe.name!r} cannot be packed (second stages, a teacher or model {recipe.model})")
    data = load_data(dataset, imbalance, data_root, n_max)
    if not hasattr(data, "pool"):
        raise BvkitError(f"the packed engine trains data held on the device (cifar10-lt, ...), not {data.name}")
    device = resolve_device(device)
    precision = resolve_precision(recipe.precision, device)
    splits = []
    for member in members:
        member_data = data if member.train_indices is None else replace(
            data, train_indices=np.asarray(member.train_indices, dtype=np.int64))
        splits.append((member_data, *validation_split(member_data, recipe.val_per_class, member.seed)))
    results: list[PackedRunResult | None] = [None] * len(members)
    for size in dict.fromkeys(len(train_idx) for _, train_idx, _ in splits):
        group = [i for i, (_, train_idx, _) in enumerate(splits) if len(train_idx) == size]
        with use_precision(precision):
            packs = _train_pack(recipe, [members[i] for i in group], [splits[i] for i in group], device, compile,
                                progress, log, imbalance)
        for i, result in zip(group, packs):
            results[i] = result
    return results


# ---------------------------------------------------------------------------------------------


def _train_pack(recipe: Recipe, members, splits, device, compile, progress, log, imbalance) -> list[PackedRunResult]:
    started = time.perf_counter()
    k_models = len(members)
    source = splits[0][0]
    num_classes = len(source.class_names)
    in_channels = source.pool.images.shape[-1]
    # each run's training and validation images on the device; test sets one at a time, at the end
    runs = [device_data(data, train_idx, val_idx, make_augment(recipe, data), device, test=False,
                        check_idx=holdout_indices(data, CHECK_PER_CLASS, member.seed, skip=recipe.val_per_class))
            for (data, train_idx, val_idx), member in zip(splits, members)]
    models = [build_model(recipe, num_classes, in_channels, m.seed, device) for m in members]
    losses = [build_loss(recipe, run.train_counts, device) for run in runs]
    packed = pack_models(models)
    if device.type == "cuda":
        packed = packed.to(memory_format=torch.channels_last)
    loss_params = [p for loss in losses for p in loss.parameters()]
    optimizer = make_optimizer(list(packed.parameters()) + loss_params, recipe.lr, recipe.momentum,
                               recipe.nesterov, recipe.weight_decay)
    loaders = [make_loader(run.train_set, recipe.batch_size, recipe.balanced, run.augment, derive_seed(m.seed, 0))
               for run, m in zip(runs, members)]
    schedule = recipe_schedule(recipe, len(loaders[0]))
    forward = torch.compile(packed) if compile and device.type == "cuda" else packed
    pack_loss = PackLoss(packed, losses)
    graphed = graphed_step(forward, pack_loss, optimizer, device, enabled=not compile, name="packed runs", log=log)
    histories: list[list] = [[] for _ in members]
    augments = [run.augment for run in runs]
    val_sets = [run.val_set for run in runs]
    normalizers = [run.normalizer for run in runs]
    step = 0
    for epoch in range(recipe.epochs):
        pack_loss.set_epoch(epoch)
        packed.train()
        plans = [loader.plan(epoch) for loader in loaders]
        total_loss = torch.zeros(k_models, device=device)
        total_correct = torch.zeros(k_models, device=device, dtype=torch.long)
        seen = 0
        epoch_started = time.perf_counter()
        bar = progress_bar(len(loaders[0]), f"stage1 x{k_models} {epoch + 1}/{recipe.epochs}", progress)
        for b in range(len(loaders[0])):
            lr = recipe.lr * schedule.factor(step)
            inputs, targets = packed_batch(plans, b, augments)
            inputs = prepare_batch(inputs, device)
            if graphed is not None:
                per_model, output = graphed(inputs, targets, lr)
            else:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast(device):
                    output = forward(inputs)
                per_model = pack_loss(float_outputs(output), targets)
                optimizer.zero_grad(set_to_none=True)
                per_model.sum().backward()
                optimizer.step()
            step += 1
            logits = output if torch.is_tensor(output) else output["logits"]
            total_loss += per_model.detach().float() * targets.shape[1]
            total_correct += (logits.detach().argmax(-1) == targets).sum(dim=1)
            seen += targets.shape[1]
            bar.update(1)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - epoch_started
        val_accuracy = packed_accuracy(packed, val_sets, normalizers, device, num_classes)
        mean_loss = (total_loss / max(seen, 1)).tolist()
        accuracy = (total_correct.double() / max(seen, 1)).tolist()
        for k in range(k_models):
            record = EpochRecord("stage1", epoch + 1, mean_loss[k], accuracy[k], lr, seen / max(elapsed, 1e-9),
                                 round(elapsed, 2), val_accuracy[k])
            histories[k].append(record.__dict__)
        if log is not None:
            log(f"[pack of {k_models}] " + format_record(record, recipe.epochs))
    if graphed is not None:
        graphed.restore()
    pack_seconds = time.perf_counter() - started
    return [_finish_member(recipe, packed, k, models[k], runs[k], histories[k], members[k], device, pack_seconds,
                           k_models, imbalance)
            for k in range(k_models)]


class PackLoss(torch.nn.Module):
    """Every packed run's own loss on its own logits and targets: (K,) per-model losses."""

    def __init__(self, packed, losses):
        super().__init__()
        self.packed = packed
        self.losses = torch.nn.ModuleList(losses)

    def set_epoch(self, epoch: int) -> None:
        for loss in self.losses:
            if hasattr(loss, "set_epoch"):
                loss.set_epoch(epoch)

    def graph_key(self) -> tuple:
        return tuple(loss.graph_key() if hasattr(loss, "graph_key") else None for loss in self.losses)

    def forward(self, output, targets):
        return torch.stack([loss(self.packed.model_output(output, k), targets[k])
                            for k, loss in enumerate(self.losses)])


def _finish_member(recipe, packed, k, model, run, history, member, device, pack_seconds, k_models,
                   imbalance) -> PackedRunResult:
    """Unpack run ``k`` into its single model and evaluate / write it as a single run would."""
    model.load_state_dict(unpack_state(packed, k))
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    run = replace(run, test_set=device_tensors(run.source.test, device))
    out = Path(member.out) if member.out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    evaluated, labels, logits = evaluate_model(model, None, run, out)
    metrics = {**run_metrics(recipe.name, run, imbalance, member.seed, recipe.epochs, evaluated,
                             extra={"precision": RUN_PRECISION.get()},
                             seconds=pack_seconds / k_models,  # the pack's wall-clock, shared among its runs
                             train_seconds=sum(row["seconds"] for row in history) / k_models, device=device),
               "pack_size": k_models}
    if out is not None:
        save_final_checkpoint(out, model, stage=0, stage_name="stage1", epoch=recipe.epochs, history=history,
                              device=device, recipe=recipe.to_dict(), dataset=run.name, seed=member.seed,
                              num_classes=len(run.class_names), in_channels=run.source.pool.images.shape[-1],
                              stage_epochs=recipe.epochs)
        write_outputs(out, metrics, labels, logits, run.counts, run.class_names, history,
                      expert_logits=expert_test_logits(model, run), expert_weights=expert_weights_of(model))
    return PackedRunResult(metrics, model, history, out)


def packed_batch(plans: list, b: int, augments) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``b`` of every run: inputs (B, K * C, H, W) normalised, targets (K, B)."""
    parts = [plan.batch(b) for plan in plans]
    x = torch.cat([p[0] for p in parts])  # (K * B, C, H, W) uint8
    y = torch.stack([p[1] for p in parts])
    params = {key: torch.cat([p[2][key] for p in parts]) for key in parts[0][2]}
    augment = augments[0]
    if params:
        x = crop_flip_rotate_with(x, augment.crop_padding, augment.rotation, params)
    if any(a.mean != augment.mean or a.std != augment.std for a in augments):
        raise BvkitError("runs of one pack must share the input normalisation")
    x = normalize(x, augment.mean, augment.std)
    k, (kb, c, h, w) = len(plans), x.shape
    x = x.view(k, kb // k, c, h, w).transpose(0, 1).reshape(kb // k, k * c, h, w)
    return x, y


@torch.no_grad()
def packed_accuracy(packed, sets, normalizers, device, num_classes: int, batch_size: int = 1000) -> list:
    """Each run's mean per-class accuracy on its own ``sets[k]`` (its validation split), in one
    packed pass: shorter sets are padded by repeating their last image, padding ignored."""
    if any(len(s.y) == 0 for s in sets):
        return [None] * len(sets)
    was_training = packed.training
    packed.eval()
    longest = max(len(s.y) for s in sets)
    logits = [[] for _ in sets]
    for start in range(0, longest, batch_size):
        positions = torch.arange(start, min(start + batch_size, longest), device=device)
        batch = [norm(s.x[positions.clamp(max=len(s.y) - 1)]) for s, norm in zip(sets, normalizers)]
        with autocast(device):
            out = packed(prepare_batch(torch.cat(batch, dim=1), device))
        for k in range(len(sets)):
            value = packed.model_output(out, k)
            logits[k].append((value if torch.is_tensor(value) else value["logits"]).float())
    packed.train(was_training)
    result = []
    for k, s in enumerate(sets):
        predicted = torch.cat(logits[k])[: len(s.y)].argmax(1).cpu().numpy()
        result.append(mean_class_accuracy(predicted, s.y.cpu().numpy(), num_classes))
    return result
