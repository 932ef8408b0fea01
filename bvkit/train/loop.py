"""The training loop: one compact loop over batches of ``(inputs, targets)``, and the batched
forward passes that evaluation and the procedures make.

Data sits on the device as uint8 and is augmented there in batches (``bvkit.data``'s
DeviceLoader / Augment, airbench style); file-list datasets (ImageNet-LT, iNat) come instead
as ready float batches from DataLoader workers, moved to the device batch by batch. Loss and
accuracy are accumulated on the device and read back once every ``sync_every`` steps (for the
progress bar) and once per epoch, so a step costs no host sync. Every source of randomness is
seeded from ``seed`` (model init under a forked RNG, data order and augmentation from
generators re-seeded per epoch), which makes a resumed run give the same weights as an
uninterrupted one. Forward passes run under the phase's precision (``bvkit.train.devices.autocast``:
bf16 autocast or none); the loss is computed outside it, in float32, on ``float_outputs``.

A phase may train ``K`` runs packed into one network in lockstep (``Phase.pack``, built by
``bvkit.train.packing``): its loss returns the ``K`` runs' losses, its targets are ``(K, B)``
and its logits ``(K, B, C)``, and ``train_phase`` takes one :class:`LoopContext` per run: each
run gets its own history rows, checkpoints (its own model, optimiser and loss state, as a
single run's), progress file and TensorBoard scalars.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from bvkit.train import ddp
from bvkit.train.checkpoint import CHECKPOINT, rng_state, save_checkpoint
from bvkit.train.devices import autocast, float_outputs
from bvkit.train.graphs import graphed_step
from bvkit.train.progress import progress_bar, write_progress
from bvkit.train.schedule import Schedule


@dataclass
class Phase:
    """One trained stage: what to run forward, what to optimise, and how the modes are set;
    what it validates, adds to its checkpoints and computes in."""

    name: str
    index: int
    model: nn.Module
    forward: Callable[[torch.Tensor], Any]
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    schedule: Schedule
    base_lr: float
    set_modes: Callable[[], None]
    logits_of: Callable[[Any], torch.Tensor] = lambda out: out if torch.is_tensor(out) else out["logits"]
    count_correct: bool = True
    shard: bool = True  # under DDP; unsharded phases run the same full batch on every rank
    # after each epoch (1-based), columns observed for reporting only (``bvkit.train.evaluation.TestWatch``)
    watch: Callable[[int], dict] | None = None
    # after each epoch: the validation columns, or val_accuracy alone
    validate: Callable[[], dict | float | None] | None = None
    # this phase's own checkpoint keys (stage_epochs, a second stage's stage_one_model, ...)
    checkpoint_extra: dict = field(default_factory=dict)
    precision: str = "fp32"  # the run's (``bvkit.train.devices.resolve_precision``): bf16 autocast or none
    # K runs packed in lockstep (``bvkit.train.packing.Pack``: its size and each run's states);
    # then ``watch`` and ``validate`` give one value per run
    pack: Any = None


@dataclass
class EpochRecord:
    stage: str
    epoch: int
    loss: float
    accuracy: float | None  # None where the output has no class logits (the routing stage)
    lr: float
    images_per_s: float
    seconds: float
    # validation (``bvkit.train.evaluation.validation_record``): mean per-class accuracy, the same
    # per shot split of the training counts, and RIDE's mean experts per image when routed
    val_accuracy: float | None = None
    val_many: float | None = None
    val_medium: float | None = None
    val_few: float | None = None
    val_experts: float | None = None
    # mean per-class test accuracy from the first lr drop of stage one on, for reporting only
    # (never to choose anything; ``bvkit.train.evaluation.TestWatch``)
    test_accuracy: float | None = None


@dataclass
class LoopContext:
    """One run, whichever phase it is in: where it trains, what it writes (its checkpoints carry
    ``checkpoint_keys``, its recipe, dataset, seed and run key) and the history it keeps."""

    device: torch.device
    seed: int
    out: Path | None = None
    progress: bool | None = None
    sync_every: int = 20
    history: list = field(default_factory=list)
    checkpoint_keys: dict = field(default_factory=dict)
    log: Callable[[str], None] | None = None
    on_epoch: Callable[[dict], None] | None = None  # each epoch's record once appended (e.g. TensorBoard)
    cuda_graphs: bool = True  # replay each full batch's step from a CUDA graph where possible
    compile: str = "auto"  # stage one's training forward through torch.compile (bvkit.train.compiling)


@dataclass
class EpochTotals:
    """What an epoch's batches add up to: summed losses and correct counts (one per packed run),
    images seen per run, the last lr and the wall-clock seconds."""

    loss: torch.Tensor
    correct: torch.Tensor
    seen: int
    lr: float
    elapsed: float


def train_phase(phase: Phase, epochs: int, ctx: LoopContext | Sequence[LoopContext], start_epoch: int = 0,
                cuda_graphs: bool | None = None) -> None:
    """Train ``phase`` from ``start_epoch`` to ``epochs``, checkpointing after every epoch;
    ``ctx``: the run's context, a packed phase's one per run. ``cuda_graphs``: this phase's
    choice (a compiled forward is not captured), else the run's."""
    runs = list(ctx) if isinstance(ctx, Sequence) else [ctx]
    if len(runs) != (phase.pack.size if phase.pack is not None else 1):
        raise ValueError(f"phase {phase.name}: {len(runs)} run contexts for its {phase.pack.size if phase.pack else 1} runs")
    lead = runs[0]
    graphed = graphed_step(phase.forward, phase.loss, phase.optimizer, lead.device,
                           enabled=lead.cuda_graphs if cuda_graphs is None else cuda_graphs,
                           name=phase.name, log=lead.log if ddp.is_main() else None, precision=phase.precision)
    step = start_epoch * len(phase.loader)
    for epoch in range(start_epoch, epochs):
        totals, step = _train_epoch(phase, epoch, epochs, lead, graphed, step)
        _end_epoch(phase, epoch, epochs, runs, totals, graphed)
    if graphed is not None:
        graphed.restore()


def _train_epoch(phase: Phase, epoch: int, epochs: int, ctx: LoopContext, graphed, step: int):
    """One epoch's steps: (its totals, the step count after it)."""
    device = ctx.device
    # a sharded loader (file lists under DDP) already yields this rank's slice of each batch
    slice_batches = phase.shard and ddp.active() and not getattr(phase.loader, "sharded", False)
    phase.loader.set_epoch(epoch)
    if hasattr(phase.loss, "set_epoch"):
        phase.loss.set_epoch(epoch)
    phase.set_modes()
    shape = (phase.pack.size,) if phase.pack is not None else ()
    total_loss = torch.zeros(shape, device=device)
    total_correct = torch.zeros(shape, device=device, dtype=torch.long)
    seen = 0
    started = time.perf_counter()
    label = phase.name if phase.pack is None else f"{phase.name} x{phase.pack.size}"
    bar = progress_bar(len(phase.loader), f"{label} {epoch + 1}/{epochs}", ctx.progress)
    for i, (inputs, targets) in enumerate(phase.loader):
        lr = phase.base_lr * phase.schedule.factor(step)
        inputs, targets = prepare_batch(inputs, device), targets.to(device, non_blocking=True)
        if slice_batches:
            inputs, targets = ddp.shard(inputs, targets)
        if graphed is not None:
            loss, output = graphed(inputs, targets, lr)
        else:
            for group in phase.optimizer.param_groups:
                group["lr"] = lr
            loss, output = train_step(phase.forward, phase.loss, phase.optimizer, inputs, targets, device,
                                      phase.precision)
        step += 1
        count = len(targets) if phase.pack is None else len(targets[0])  # (B, ...) or a pack's (K, B)
        total_loss += loss.detach().float() * count
        if phase.count_correct:
            total_correct += (phase.logits_of(output).detach().argmax(-1) == targets).sum(-1)
        seen += count
        if not bar.disable and ((i + 1) % ctx.sync_every == 0 or i + 1 == len(phase.loader)):
            postfix = {"loss": f"{total_loss.mean().item() / seen:.3f}"}
            if phase.count_correct:
                postfix["acc"] = f"{total_correct.double().mean().item() / seen:.3f}"
            postfix.update(lr=f"{lr:.2g}", img_s=f"{seen / (time.perf_counter() - started):.0f}")
            bar.set_postfix(postfix)
        bar.update(1)
    bar.close()
    if device.type == "cuda":  # the GPU may still be running queued steps: count them here
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    if phase.shard and ddp.active():  # report the whole global batch, not this rank's slice
        total_loss, total_correct, seen = ddp.sum_over_ranks(total_loss, total_correct, seen)
    return EpochTotals(total_loss, total_correct, seen, lr, elapsed), step


def _end_epoch(phase: Phase, epoch: int, epochs: int, runs: list[LoopContext], totals: EpochTotals,
               graphed) -> None:
    """Each run's record of the epoch (validation and watched columns included), appended to its
    history and reported; its checkpoint and progress file written."""
    per_run = (lambda value: value) if phase.pack is not None else (lambda value: [value])
    validations = per_run(phase.validate() if phase.validate else None)
    watched = per_run(phase.watch(epoch + 1) if phase.watch is not None else {})
    losses, corrects = totals.loss.reshape(-1).tolist(), totals.correct.reshape(-1).tolist()
    seen, states = max(totals.seen, 1), None
    for k, ctx in enumerate(runs):
        validation = validations[k] if isinstance(validations[k], dict) else {"val_accuracy": validations[k]}
        record = EpochRecord(
            stage=phase.name,
            epoch=epoch + 1,
            loss=losses[k] / seen,
            accuracy=corrects[k] / seen if phase.count_correct else None,
            lr=totals.lr,
            images_per_s=totals.seen / max(totals.elapsed, 1e-9),
            seconds=round(totals.elapsed, 2),
            **validation,
            **watched[k],
        )
        ctx.history.append(record.__dict__)
        if ctx.on_epoch is not None and ddp.is_main():
            ctx.on_epoch(record.__dict__)
        if ctx.log is not None and ddp.is_main():
            ctx.log(format_record(record, epochs))
        if ctx.out is not None and ddp.is_main():
            states = states or phase_states(phase, graphed)
            save_checkpoint(ctx.out / CHECKPOINT, stage=phase.index, stage_name=phase.name, epoch=epoch + 1,
                            **states[k], rng=rng_state(ctx.device), history=json.dumps(ctx.history),
                            **{**ctx.checkpoint_keys, **phase.checkpoint_extra})
            write_progress(ctx.out, record.__dict__, epochs)


def phase_states(phase: Phase, graphed=None) -> list[dict]:
    """Each run's ``model``, ``optimizer`` and ``loss`` state as its checkpoint holds them (a
    packed run's as if it had trained alone)."""
    optimizer = graphed.optimizer_state() if graphed is not None else phase.optimizer.state_dict()
    if phase.pack is not None:
        return phase.pack.run_states(optimizer)
    return [{"model": ddp.unwrap(phase.model).state_dict(), "optimizer": optimizer, "loss": phase.loss.state_dict()}]


def train_step(forward, loss_fn, optimizer, inputs, targets, device: torch.device, precision: str = "fp32"):
    """One eager step, ``(loss, output)``: the forward under ``autocast(device, precision)``, the
    loss in float32 on its float32 outputs, backward (of the sum of a packed phase's per-run
    losses), the optimizer's step."""
    with autocast(device, precision):
        output = forward(inputs)
    loss = loss_fn(float_outputs(output), targets)
    optimizer.zero_grad(set_to_none=True)
    (loss if loss.dim() == 0 else loss.sum()).backward()
    optimizer.step()
    return loss, output


def format_record(record: EpochRecord, epochs: int) -> str:
    acc = f" acc {record.accuracy:.4f}" if record.accuracy is not None else ""
    val = f" val_acc {record.val_accuracy:.4f}" if record.val_accuracy is not None else ""
    return (f"{record.stage} epoch {record.epoch}/{epochs}: loss {record.loss:.4f}{acc}"
            f"{val} lr {record.lr:.3g} {record.images_per_s:.0f} img/s")


@torch.no_grad()
def predict(forward: Callable, x: torch.Tensor, normalize: Callable, device: torch.device,
            batch_size: int = 1000, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """``forward`` over uint8 images ``x`` in batches, outputs concatenated on the CPU per key
    along dim 0, so every output must be batch-first (a tensor output is returned as
    ``logits``); floating outputs as float32. Forwards under ``autocast(device, precision)``."""
    batches = (normalize(x[start : start + batch_size].to(device)) for start in range(0, len(x), batch_size))
    return predict_batches(forward, batches, device, precision)


@torch.no_grad()
def predict_batches(forward: Callable, batches, device: torch.device, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """``predict`` over an iterable of ready (normalised) input batches, e.g. a DataLoader's
    images (``(inputs, targets)`` pairs are taken for their inputs)."""
    parts: dict[str, list] = {}
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = prepare_batch(batch, device)
        with autocast(device, precision):
            out = forward(batch)
        for key, value in (out if isinstance(out, dict) else {"logits": out}).items():
            parts.setdefault(key, []).append(value.float() if value.is_floating_point() else value)
    return {key: torch.cat(values).cpu() for key, values in parts.items()}


def module_of(forward) -> nn.Module | None:
    """The module a forward callable belongs to (itself, or a bound method's owner)."""
    module = forward if isinstance(forward, nn.Module) else getattr(forward, "__self__", None)
    return module if isinstance(module, nn.Module) else None


def prepare_batch(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device`` (a no-op for device-resident batches), channels-last on CUDA."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def derive_seed(seed: int, *parts: int) -> int:
    """A reproducible seed for one (stage, epoch, ...) from the run seed."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def set_frozen_modes(model: nn.Module, trainable: nn.Module | None = None) -> None:
    """Everything in eval mode (BN statistics frozen); ``trainable`` back in train mode."""
    model.eval()
    if trainable is not None:
        trainable.train()


def freeze(model: nn.Module) -> None:
    """No parameter of ``model`` takes a gradient any more."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
