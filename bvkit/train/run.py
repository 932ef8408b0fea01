"""``train()``: a method's recipe on a long-tailed dataset, stage one then any second stage,
with resume, evaluation and the run's output files (metrics.json, predictions.npz,
history.csv, checkpoint.pt; ``docs/formats.md``).

The run's data (held on the device, or a file list decoded by workers) is ``bvkit.train.data``'s;
stage one is a plain phase or the recipe's procedure (``bvkit.train.procedures``), the second
stages are ``bvkit.train.stages``'.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.methods import Recipe, apply_overrides, create_method
from bvkit.train import ddp
from bvkit.train.builders import (
    build_loss,
    build_model,
    load_teacher,
    make_optimizer,
    recipe_schedule,
    training_forward,
)
from bvkit.train.checkpoint import load_stage_one, load_state, restore_rng
from bvkit.train.compiling import CompileRecord, check_compile, compile_forward, resolve_compile
from bvkit.train.data import load_data, prepare_data
from bvkit.train.devices import resolve_device
from bvkit.train.evaluation import TestWatch, first_drop_epoch, snapshot_every, validation_record
from bvkit.train.loop import LoopContext, Phase, derive_seed, train_phase
from bvkit.train.outputs import checkpoint_keys, finish_run, resume_payload, resume_phase, run_key
from bvkit.train.procedures import ProcedureEnv, get_procedure
from bvkit.train.stages import train_stages
from bvkit.train.tensorboard import EpochScalars


@dataclass
class TrainResult:
    """What a run produced: the trained model, its test metrics, logits and per-epoch history."""

    recipe: Recipe
    model: nn.Module
    metrics: dict
    logits: np.ndarray
    labels: np.ndarray
    history: list
    out: Path | None


def train(
    method: str | Recipe,
    dataset: Any,
    *,
    imbalance: float = 100.0,
    seed: int = 0,
    out: str | Path | None = None,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    n_max: int | None = None,
    stage_one: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    log=None,
    cuda_graphs: bool = True,
    workers: int | None = None,
    tensorboard: bool = False,
    compile: str = "auto",
    **overrides: Any,
) -> TrainResult:
    """Train ``method`` on ``dataset``: a name for ``make_long_tailed`` or a ``LongTailed``
    (data held on the device), or a file-list benchmark name (``imagenet-lt``, ``inat2018``:
    the published lists under ``data_root`` / ``$BVKIT_DATA``, see ``bvkit.data.load_benchmark``).

    A method given by name takes the dataset's published setting first (on ImageNet-LT / iNat:
    ``bvkit.methods.for_dataset``); a ``Recipe`` is used as it is. ``overrides`` are recipe
    settings (see ``bvkit.methods.create_method``). With ``out``, a checkpoint is written after
    every epoch and a rerun resumes from it; ``stage_one`` skips stage one and loads its model
    from a bvkit checkpoint (decoupled methods, ride-ea). ``log`` (e.g. ``print``) receives one
    line per epoch. On CUDA each full batch's step is replayed from a CUDA graph
    (``bvkit.train.graphs``) unless ``cuda_graphs=False``. ``workers``: DataLoader processes
    per rank for file-list data (default: up to 8, the CPUs shared among local ranks); results
    do not depend on it. ``tensorboard``: every epoch's record also as TensorBoard scalars in
    ``out/tensorboard`` (``bvkit.train.tensorboard``; needs ``out``). ``compile``: auto, on, off:
    stage one's training forward through ``torch.compile`` (``bvkit.train.compiling``; auto only
    where it was measured to pay), recorded in ``metrics.json`` (``"compile"``).
    """
    started = time.perf_counter()
    dataset_name = dataset if isinstance(dataset, str) else getattr(dataset, "name", None)
    recipe = create_method(method, dataset=dataset_name, **overrides)
    device = resolve_device(device)
    check_compile(compile)
    long_tailed = load_data(dataset, imbalance, data_root, n_max)
    ddp.init_from_env(device)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(long_tailed, recipe, seed, device, workers)  # its precision: every forward of the run's
    payload = resume_payload(out, run_key(recipe, data, seed)) if resume else None
    ctx = LoopContext(device=device, seed=seed, out=out, progress=progress, log=log, cuda_graphs=cuda_graphs,
                      compile=compile, on_epoch=_epoch_scalars(out) if tensorboard else None,
                      checkpoint_keys=checkpoint_keys(recipe, data, seed))
    if payload is not None:
        restore_rng(payload, device)
        ctx.history = json.loads(payload.get("history", "[]"))
    extra_metrics: dict = {"precision": data.precision}  # and a procedure's or a stage's own metrics.json keys

    model, recipe, epochs, stage_one_state = _stage_one(recipe, data, seed, ctx, payload, stage_one, extra_metrics)
    routed = train_stages(model, recipe, data, seed, ctx, payload, {"stage_one_model": stage_one_state}, extra_metrics)

    ddp.barrier()
    metrics, labels, logits = finish_run(ctx, recipe, model, routed, data, imbalance=imbalance, epochs=epochs,
                                         extra=extra_metrics, started=started)
    if ctx.on_epoch is not None:
        ctx.on_epoch.close()
    ddp.barrier()
    return TrainResult(recipe, model, metrics, logits, labels, ctx.history, out)


def _epoch_scalars(out: Path | None):
    """The TensorBoard writer of the run's epochs (on the main rank; other ranks write nothing)."""
    if out is None:
        raise BvkitError("tensorboard needs an output directory (out): the event files go to OUT/tensorboard")
    return EpochScalars(out) if ddp.is_main() else None


def _stage_one(recipe: Recipe, data, seed: int, ctx: LoopContext, payload, stage_one, extra_metrics: dict):
    """Stage one, loaded (``stage_one``: a checkpoint), trained by the recipe's procedure, or one
    plain phase: (model, recipe (a loaded stage one's model), stage one's epochs, its state)."""
    stage_one_state = None
    epochs = recipe.epochs
    if stage_one is not None:
        source_recipe, stage_one_state = load_stage_one(stage_one)
        epochs = source_recipe.get("epochs") if source_recipe else None
        if source_recipe and (source_recipe["model"], source_recipe["model_kwargs"]) != (recipe.model, recipe.model_kwargs):
            recipe = apply_overrides(recipe, {"model": source_recipe["model"], "model_kwargs": source_recipe["model_kwargs"]})
        extra_metrics["stage_one"] = str(stage_one)
    if recipe.procedure is not None:
        if stage_one is not None:
            raise BvkitError(f"method {recipe.name} trains its own stages; it takes no stage-one checkpoint")
        extra_metrics["compile"] = CompileRecord(ctx.compile, False, f"{recipe.procedure}: its own stage one is "
                                                 "not compiled").record()
        return _procedure_stage_one(recipe, data, seed, ctx, payload, extra_metrics), recipe, epochs, None
    model = build_model(recipe, len(data.class_names), data.in_channels, seed, ctx.device)
    if payload is not None and payload["stage"] > 0:
        stage_one_state = payload["stage_one_model"]
    if stage_one_state is not None:
        load_state(model, stage_one_state, "stage-one model")
    else:
        extra_metrics["compile"] = _plain_stage_one(model, recipe, data, seed, ctx, payload)
        stage_one_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model, recipe, epochs, stage_one_state


def _plain_stage_one(model: nn.Module, recipe: Recipe, data, seed: int, ctx: LoopContext, payload) -> dict:
    """Stage one as one phase: the recipe's loss (and teacher) on its loader, resumable; returns
    what it compiled (``bvkit.train.compiling.CompileRecord``)."""
    loss = build_loss(recipe, np.asarray(data.train_counts), ctx.device)
    forward = training_forward(model, recipe, load_teacher(recipe, ctx.device))
    optimizer = make_optimizer(list(model.parameters()) + list(loss.parameters()), recipe.lr,
                               recipe.momentum, recipe.nesterov, recipe.weight_decay)
    loader = data.train_loader(recipe.batch_size, recipe.balanced, derive_seed(seed, 0))
    schedule = recipe_schedule(recipe, len(loader))
    compiled = CompileRecord(ctx.compile, *resolve_compile(ctx.compile, ctx.device, recipe.epochs * len(loader)))
    if compiled.enabled:
        forward = compile_forward(forward)
    phase = Phase("stage1", 0, model, forward, loss, optimizer, loader, schedule, recipe.lr, set_modes=model.train,
                  watch=TestWatch(data, model, ctx.out, first_drop_epoch(schedule), snapshot_every(recipe.epochs)),
                  validate=lambda: validation_record(data, model), checkpoint_extra={"stage_epochs": recipe.epochs},
                  precision=data.precision)
    start = resume_phase(phase, payload)
    train_phase(phase, recipe.epochs, ctx, start_epoch=start, cuda_graphs=ctx.cuda_graphs and not compiled.enabled)
    return compiled.record()


def _procedure_stage_one(recipe: Recipe, data, seed: int, ctx: LoopContext, payload, extra_metrics: dict) -> nn.Module:
    """Stage one by the recipe's procedure (``bvkit.train.procedures``); returns its model."""
    env = ProcedureEnv(
        recipe=recipe, long_tailed=data.long_tailed, train_idx=data.train_idx, val_idx=data.val_idx,
        train_set=data.train_set, val_set=data.val_set, train_counts=data.train_counts,
        augment=data.augment, normalizer=data.normalizer, n_classes=len(data.class_names),
        in_channels=data.in_channels, seed=seed, device=ctx.device, ctx=ctx, train=train,
        payload=payload, out=ctx.out, progress=ctx.progress, precision=data.precision,
    )
    model = get_procedure(recipe.procedure)(env)
    extra_metrics.update(env.metrics)
    return model
