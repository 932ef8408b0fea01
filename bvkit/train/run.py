"""``train()``: a method's recipe on a long-tailed dataset, stage one then any second stage,
with resume, evaluation and the run's output files (metrics.json, predictions.npz,
history.csv, checkpoint.pt).

Two data paths share the one ``train()``; what differs is behind a small interface (a
training loader, predictions over the validation or test part, their labels):

* :class:`DeviceData`: a long-tailed set cut from a balanced pool (CIFAR-LT, Fashion-MNIST-LT,
  synthetic-lt), held on the device as uint8 and augmented there in batches;
* :class:`ListData`: a file-list benchmark (``imagenet-lt``, ``inat2018``; ``bvkit.data.load_benchmark``),
  decoded by DataLoader workers with RIDE's ImageNet transforms. Validation: ImageNet-LT's val
  list (20 per class); iNat 2018 ships none, so up to ``val_per_class`` images of each class (at
  most a fifth of it) are held out of the training list; the test set is ImageNet-LT's test list,
  iNat's official val list. Under torchrun each rank loads only its slice of every batch and
  evaluation is split over the ranks and gathered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.methods import Recipe, Stage, apply_overrides, create_method
from bvkit.train import ddp
from bvkit.train.checkpoint import load_checkpoint
from bvkit.train.decoupled import attach_crt, attach_lws, attach_tau_norm, classifier_weight, select_tau
from bvkit.train.engine import (
    CHECKPOINT,
    LoopContext,
    Phase,
    derive_seed,
    load_stage_one,
    make_optimizer,
    predict,
    predict_batches,
    recipe_schedule,
    resolve_device,
    restore_rng,
    run_phase,
    scaled_drw_epoch,
    set_frozen_modes,
)
from bvkit.train.metrics import expert_usage_by_split, per_class_accuracy, split_accuracy
from bvkit.train.routing import attach_routers, routing_loss
from bvkit.train.schedule import Schedule


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


@dataclass
class Tensors:
    x: torch.Tensor
    y: torch.Tensor


@dataclass
class DeviceData:
    """A long-tailed set held on the device: training and validation images cut from the
    pool, and the balanced test set, all uint8 ``Tensors``."""

    name: str
    class_names: list
    counts: np.ndarray  # long-tailed training counts: shot splits, the prediction file's train_counts
    train_counts: np.ndarray | None  # images per class actually trained on (validation carved out)
    train_set: Tensors | None
    val_set: Tensors | None
    test_set: Tensors | None
    augment: Any
    normalizer: Callable
    device: torch.device
    source: Any = None  # the LongTailed (procedures)
    train_idx: np.ndarray | None = None  # into source.pool
    val_idx: np.ndarray | None = None

    @property
    def in_channels(self) -> int:
        return int(self.test_set.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.test_set.x.shape[-1])

    def part(self, name: str) -> Tensors:
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set}[name]

    def size(self, name: str) -> int:
        return len(self.part(name).y)

    def labels(self, name: str) -> np.ndarray:
        return self.part(name).y.cpu().numpy()

    def train_loader(self, batch_size: int, balanced: bool, seed: int, shard: bool = True):
        """Under DDP every rank walks the same batches; ``run_phase`` slices them (``shard``)."""
        return make_loader(self.train_set, batch_size, balanced, self.augment, seed)

    def predict(self, forward, name: str) -> dict[str, torch.Tensor]:
        return predict(forward, self.part(name).x, self.normalizer, self.device)


EVAL_BATCH = 256


@dataclass
class ListData:
    """A file-list benchmark: training, validation and test ``FileList``s whose images are
    decoded by DataLoader workers (``workers``) with RIDE's ImageNet transforms."""

    name: str
    class_names: list
    counts: np.ndarray  # the whole training list's counts: shot splits and train_counts
    train: Any  # bvkit.data.FileList (validation images held out where the benchmark has no val list)
    val: Any
    test: Any
    device: torch.device
    image_size: int
    resize: int
    workers: int
    in_channels: int = 3

    @property
    def train_counts(self) -> np.ndarray:
        return self.train.class_counts()

    def part(self, name: str):
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def size(self, name: str) -> int:
        return len(self.part(name))

    def labels(self, name: str) -> np.ndarray:
        return np.asarray(self.part(name).labels)

    def transform(self, train: bool):
        from bvkit.data import imagenet_transform

        return imagenet_transform(train, size=self.image_size, resize=self.resize)

    def train_loader(self, batch_size: int, balanced: bool, seed: int, shard: bool = True):
        """Batches drawn from ``(seed, epoch)``, every image's augmentation from ``(seed, epoch,
        index)``; under DDP with ``shard`` each rank loads its slice of every global batch."""
        from bvkit.data import file_list_loader

        world = ddp.world_size() if shard else 1
        # a last slice of one image breaks train-mode BatchNorm: drop the last batch only then
        drop_last = 0 < len(self.train) % batch_size < 2 * world
        return file_list_loader(self.train, batch_size, train=True, workers=self.workers, balanced=balanced,
                                seed=seed, transform=self.transform(True), drop_last=drop_last,
                                rank=ddp.rank() if shard else 0, world_size=world)

    def predict(self, forward, name: str) -> dict[str, torch.Tensor]:
        """Outputs over a part in list order; under DDP each rank predicts a contiguous share
        (with rank 0's BatchNorm statistics) and the shares are gathered on every rank."""
        from bvkit.data import file_list_loader

        files = self.part(name)
        index = np.arange(len(files))
        if ddp.active():
            module = _module_of(forward)
            if module is not None:
                ddp.broadcast_buffers(module)
            index = np.array_split(index, ddp.world_size())[ddp.rank()]
        loader = file_list_loader(files.subset(index), EVAL_BATCH, train=False, workers=self.workers,
                                  transform=self.transform(False))
        try:
            outputs = predict_batches(forward, loader, self.device)
        except BvkitError as err:  # re-raised from a worker with its traceback: keep one line
            from bvkit.data.loaders import worker_message

            raise BvkitError(worker_message(err)) from None
        return ddp.gather(outputs)


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
    do not depend on it.
    """
    started = time.perf_counter()
    dataset_name = dataset if isinstance(dataset, str) else getattr(dataset, "name", None)
    recipe = (apply_overrides(method, overrides) if isinstance(method, Recipe)
              else create_method(method, dataset=dataset_name, **overrides))
    device = ddp.local_device(resolve_device(device))
    source = _load_data(dataset, imbalance, data_root, n_max)
    ddp.init_from_env(device)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    data = prepare_data(source, recipe, seed, device, workers)
    counts = np.asarray(data.counts)
    num_classes = len(data.class_names)
    train_counts = np.asarray(data.train_counts)
    in_channels = data.in_channels

    run_key = {"recipe": recipe.to_dict(), "dataset": data.name, "seed": seed, "counts": train_counts.tolist()}
    payload = _resume_payload(out, run_key) if resume else None
    ctx = LoopContext(device=device, seed=seed, out=out, progress=progress, log=log, cuda_graphs=cuda_graphs)
    if payload is not None:
        restore_rng(payload, device)
        ctx.history = json.loads(payload.get("history", "[]"))
    base_extra = {"recipe": recipe.to_dict(), "dataset": data.name, "seed": seed, "num_classes": num_classes,
                  "in_channels": in_channels, "run_key": json.dumps(run_key, sort_keys=True)}

    # ---- stage one ------------------------------------------------------------------------
    stage_one_state = None
    stage_one_epochs = recipe.epochs
    if stage_one is not None:
        source_recipe, stage_one_state = load_stage_one(stage_one)
        stage_one_epochs = source_recipe.get("epochs") if source_recipe else None
        extra_stage_one = {"stage_one": str(stage_one)}
        if source_recipe and (source_recipe["model"], source_recipe["model_kwargs"]) != (recipe.model, recipe.model_kwargs):
            recipe = apply_overrides(recipe, {"model": source_recipe["model"], "model_kwargs": source_recipe["model_kwargs"]})
    extra_metrics: dict = {}
    if recipe.procedure is not None:
        if stage_one is not None:
            raise BvkitError(f"method {recipe.name} trains its own stages; it takes no stage-one checkpoint")
        model = _run_procedure(recipe, data, seed, device, ctx, payload, out, progress, base_extra, extra_metrics)
    else:
        model = build_model(recipe, num_classes, in_channels, seed, device)
        if payload is not None and payload["stage"] > 0:
            stage_one_state = payload["stage_one_model"]
        if stage_one_state is not None:
            _load_state(model, stage_one_state, "stage-one model")
        else:
            loss = build_loss(recipe, train_counts, device)
            teacher = load_teacher(recipe, device)
            trained = ddp.wrap(ExpertsForward(model) if recipe.is_ride else model)
            forward = trained if teacher is None else _with_teacher(trained, teacher)
            optimizer = make_optimizer(list(model.parameters()) + list(loss.parameters()), recipe.lr,
                                       recipe.momentum, recipe.nesterov, recipe.weight_decay)
            loader = data.train_loader(recipe.batch_size, recipe.balanced, derive_seed(seed, 0))
            phase = Phase("stage1", 0, model, forward, loss, optimizer, loader,
                          recipe_schedule(recipe, len(loader)), recipe.lr, set_modes=model.train)
            start = 0
            if payload is not None and payload["stage"] == 0:
                _load_state(model, payload["model"], "checkpoint model")
                optimizer.load_state_dict(payload["optimizer"])
                loss.load_state_dict(payload["loss"])
                start = payload["epoch"]
            ctx.validate = lambda: part_accuracy(data, model, "val")
            ctx.checkpoint_extra = {**base_extra, "stage_epochs": recipe.epochs}
            run_phase(phase, recipe.epochs, ctx, start_epoch=start)
            stage_one_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # ---- second stages --------------------------------------------------------------------
    if stage_one is not None:
        extra_metrics.update(extra_stage_one)
    routed = None
    for index, stage in enumerate(recipe.stages, start=1):
        resume_here = payload if payload is not None and payload["stage"] == index else None
        ctx.checkpoint_extra = {**base_extra, "stage_epochs": stage.epochs, "stage_one_model": stage_one_state}
        if stage.kind == "tau-norm":
            tau, grid = _tau_norm(model, stage, data, resume_here)
            extra_metrics.update(tau=tau, tau_grid=grid)
            ctx.checkpoint_extra["tau"] = tau
            _save_final(ctx, model, index, stage)
        elif stage.kind in ("crt", "lws"):
            head = attach_crt(model, num_classes, derive_seed(seed, index)) if stage.kind == "crt" else attach_lws(model, num_classes)
            _run_second_stage(model, head, nn.CrossEntropyLoss(), stage, index, data, seed, ctx, resume_here)
        elif stage.kind == "routing":
            routed, routers = attach_routers(model, recipe, stage, num_classes, derive_seed(seed, index), device)
            _run_second_stage(routed, routers, routing_loss(stage), stage, index, data, seed, ctx, resume_here,
                              forward=routed.forward_experts, count_correct=False)
        else:  # registry validation makes this unreachable for built-in recipes
            raise BvkitError(f"unknown stage {stage.kind!r}")

    # ---- evaluation and outputs -----------------------------------------------------------
    ddp.barrier()
    model.eval()
    metrics, labels, logits = evaluate_model(model, routed, data)
    metrics = {
        "method": recipe.name,
        "dataset": data.name,
        "imbalance": _imbalance_of(data, imbalance),
        "seed": seed,
        "epochs": stage_one_epochs,
        **metrics,
        "n_train": data.size("train"),
        "n_val": data.size("val"),
        **extra_metrics,
        "mflops": metrics["mflops"],
        "seconds": round(time.perf_counter() - started, 1),  # this call (a resumed run: since resuming)
        "train_seconds": round(sum(row.get("seconds", 0.0) for row in ctx.history), 1),  # all epochs
        "device": str(device),
    }
    if out is not None and ddp.is_main():
        write_outputs(out, metrics, labels, logits, counts, data.class_names, ctx.history)
    ddp.barrier()
    return TrainResult(recipe, model, metrics, logits, labels, ctx.history, out)


def prepare_data(source, recipe: Recipe, seed: int, device: torch.device, workers: int | None = None):
    """The run's data: :class:`DeviceData` for a ``LongTailed``, :class:`ListData` for a
    file-list benchmark, with the validation split of ``recipe.val_per_class`` (never the test set)."""
    from bvkit.data import FileListBenchmark

    if isinstance(source, FileListBenchmark):
        return _list_data(source, recipe, seed, device, workers)
    train_idx, val_idx = validation_split(source, recipe.val_per_class, seed)
    pool = source.pool
    augment = _augment(recipe, source)
    return DeviceData(
        name=source.name, class_names=source.class_names, counts=np.asarray(source.counts),
        train_counts=np.bincount(pool.labels[train_idx], minlength=len(source.class_names)),
        train_set=_to_device(pool.images[train_idx], pool.labels[train_idx], device),
        val_set=_to_device(pool.images[val_idx], pool.labels[val_idx], device),
        test_set=_to_device(source.test.images, source.test.labels, device),
        augment=augment, normalizer=_normalizer(augment), device=device,
        source=source, train_idx=train_idx, val_idx=val_idx,
    )


LIST_AUGMENT = ("size", "resize")


def _list_data(bench, recipe: Recipe, seed: int, device: torch.device, workers: int | None) -> ListData:
    if recipe.procedure is not None:
        raise BvkitError(f"method {recipe.name} trains by its own procedure ({recipe.procedure}), which needs data "
                         f"held on the device (cifar10-lt, cifar100-lt, ...); it does not run on {bench.name}")
    unknown = sorted(set(recipe.augment) - set(LIST_AUGMENT))
    if unknown:
        raise BvkitError(f"augment setting(s) {', '.join(unknown)} are for data held on the device; {bench.name} "
                         f"takes augment.size and augment.resize (a method by name gets {bench.name}'s setting)")
    size = int(recipe.augment.get("size", 224))
    resize = int(recipe.augment.get("resize", round(size * 256 / 224)))
    if bench.val is not None:
        train, val = bench.train, bench.val
    else:  # no validation list (iNat 2018): hold a few images of each class out of the training list
        train_idx, val_idx = carve_per_class(bench.train.labels, np.arange(len(bench.train)),
                                             range(len(bench.class_names)), recipe.val_per_class, seed)
        train, val = bench.train.subset(train_idx), bench.train.subset(val_idx)
    if workers is None:
        import os

        workers = min(8, max(1, (os.cpu_count() or 1) // ddp.local_world_size()))
    elif workers < 0:
        raise BvkitError(f"workers must be >= 0, got {workers}")
    return ListData(bench.name, bench.class_names, np.asarray(bench.counts), train, val, bench.test, device,
                    size, resize, int(workers))


def _run_procedure(recipe, data, seed, device, ctx, payload, out, progress, base_extra, extra_metrics):
    """Stage one by the recipe's procedure (``bvkit.train.procedures``); returns its model."""
    from bvkit.train.procedures import ProcedureEnv, get_procedure

    env = ProcedureEnv(recipe, data.source, data.train_idx, data.val_idx, data.train_set, data.val_set,
                       data.train_counts, data.augment, data.normalizer, len(data.class_names), data.in_channels,
                       seed, device, ctx, payload, out, progress)
    ctx.checkpoint_extra = {**base_extra, "stage_epochs": recipe.epochs}
    model = get_procedure(recipe.procedure)(env)
    extra_metrics.update(env.metrics)
    return model


def evaluate_model(model, routed, data) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, test labels, test logits): accuracy per shot split of the training counts,
    validation accuracy, MFLOPs and, for routed RIDE, expert usage per split."""
    counts = np.asarray(data.counts)
    num_classes = len(counts)
    forward = routed.route if routed is not None else model
    outputs = data.predict(forward, "test")
    logits = outputs["logits"].numpy()
    labels = data.labels("test")
    splits = _shot_splits(counts)
    metrics = {
        "accuracy": split_accuracy(per_class_accuracy(logits.argmax(1), labels, num_classes), splits),
        "val_accuracy": part_accuracy(data, forward, "val"),
        "n_test": int(len(labels)),
        "split_sizes": {s: int((splits == s).sum()) for s in ("many", "medium", "few")},
    }
    usage = None
    if routed is not None:
        metrics["expert_usage"] = expert_usage_by_split(outputs["n_experts"].numpy(), labels, splits,
                                                        routed.num_experts)
        usage = metrics["expert_usage"]["all"]
    metrics["mflops"] = measure_mflops(routed if routed is not None else model, data.image_size, usage)
    return metrics, labels, logits


def evaluate_run(model, routed, test_set: Tensors, val_set: Tensors, normalizer, device, counts):
    """``evaluate_model`` on device-resident test and validation tensors (the packed engine's form)."""
    return evaluate_model(model, routed, _tensor_parts(val_set, normalizer, device, len(counts), test_set, counts))


def _tensor_parts(val_set, normalizer, device, num_classes, test_set=None, counts=None) -> DeviceData:
    return DeviceData("", [str(c) for c in range(num_classes)], counts, None, None, val_set, test_set, None,
                      normalizer, device)


class ExpertsForward(nn.Module):
    """RIDE's training forward (per-expert logits for the loss) as a module DDP can wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_experts(x)


def _with_teacher(student, teacher):
    def forward(x):
        output = dict(student(x))
        with torch.no_grad():
            output["teacher_logits"] = teacher(x).float()
        return output

    return forward


def build_model(recipe: Recipe, num_classes: int, in_channels: int, seed: int, device: torch.device) -> nn.Module:
    """The recipe's model, initialised from ``seed`` without touching the global RNG."""
    from bvkit.models import create_model

    kwargs = dict(recipe.model_kwargs)
    kwargs.setdefault("in_channels", in_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = create_model(recipe.model, num_classes, **kwargs)
        except TypeError as err:
            raise BvkitError(f"model {recipe.model}: {err}") from None
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def build_loss(recipe: Recipe, class_counts: np.ndarray, device: torch.device) -> nn.Module:
    """The recipe's loss; its DRW / temperature-switch epoch scaled like the lr milestones."""
    from bvkit.losses import create_loss

    kwargs = dict(recipe.loss_kwargs)
    if recipe.drw_epoch is not None:
        kwargs.setdefault("drw_epoch", scaled_drw_epoch(recipe))
    elif recipe.loss.startswith("ride"):
        kwargs.setdefault("drw_epoch", None)  # RIDE losses: no DRW and no class-wise temperature
    return create_loss(recipe.loss, class_counts, **kwargs).to(device)


def load_teacher(recipe: Recipe, device: torch.device) -> nn.Module | None:
    if recipe.teacher is None:
        return None
    if not recipe.teacher:
        raise BvkitError(f"method {recipe.name} needs a teacher checkpoint (--teacher CKPT)")
    payload = load_checkpoint(recipe.teacher)
    teacher_recipe = Recipe.from_dict(payload["recipe"])
    teacher = build_model(teacher_recipe, payload["num_classes"], payload["in_channels"], 0, device)
    state = payload["model"] if payload.get("stage") == 0 else payload["stage_one_model"]
    _load_state(teacher, state, "teacher")
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def make_loader(tensors: Tensors, batch_size: int, balanced: bool, augment, seed: int):
    from bvkit.data import DeviceLoader

    # a last batch of one image breaks train-mode BatchNorm; drop it only then
    drop_last = len(tensors.y) % batch_size == 1
    return DeviceLoader(tensors.x, tensors.y, batch_size, shuffle=True, drop_last=drop_last,
                        balanced=balanced, augment=augment, seed=seed)


def _run_second_stage(model, head, loss, stage: Stage, index, data, seed, ctx, payload, forward=None,
                      count_correct=True):
    optimizer = make_optimizer([p for p in head.parameters() if p.requires_grad], stage.lr, stage.momentum,
                               stage.nesterov, stage.weight_decay)
    # small heads on frozen features: every DDP rank takes the whole batch (shard=False)
    loader = data.train_loader(stage.batch_size, stage.balanced, derive_seed(seed, index), shard=False)
    schedule = Schedule(kind=stage.schedule, epochs=stage.epochs, steps_per_epoch=len(loader))
    phase = Phase(stage.kind, index, model, forward or model, loss, optimizer, loader, schedule, stage.lr,
                  set_modes=lambda: set_frozen_modes(model, None), count_correct=count_correct, shard=False)
    start = 0
    if payload is not None:
        _load_state(model, payload["model"], "checkpoint model")
        optimizer.load_state_dict(payload["optimizer"])
        start = payload["epoch"]
    validate_forward = model.route if hasattr(model, "route") else model
    ctx.validate = lambda: part_accuracy(data, validate_forward, "val")
    run_phase(phase, stage.epochs, ctx, start_epoch=start)


def _tau_norm(model, stage, data, payload):
    grid = stage.options.get("tau_grid", [round(0.1 * i, 1) for i in range(11)])
    if payload is not None and "tau" in payload:
        tau, scores = float(payload["tau"]), None
    else:
        model.eval()
        with torch.no_grad():
            features = data.predict(model.forward_features, "val")["logits"]
        weight = classifier_weight(model.classifier).detach().float().cpu()
        tau, scores = select_tau(features, torch.from_numpy(data.labels("val")), weight, grid,
                                 len(data.class_names))
    attach_tau_norm(model, tau)
    return tau, scores


def _save_final(ctx: LoopContext, model, index: int, stage: Stage) -> None:
    from bvkit.train.checkpoint import rng_state, save_checkpoint

    if ctx.out is None or not ddp.is_main():
        return
    save_checkpoint(ctx.out / CHECKPOINT, stage=index, stage_name=stage.kind, epoch=0,
                    model=model.state_dict(), optimizer={}, loss={}, rng=rng_state(ctx.device),
                    history=json.dumps(ctx.history), **ctx.checkpoint_extra)


@torch.no_grad()
def part_accuracy(data, forward, part: str = "val") -> float | None:
    """Mean per-class accuracy of ``forward`` on a part of the run's data (None when empty),
    the module behind ``forward`` in eval mode meanwhile."""
    if data.size(part) == 0:
        return None
    module = _module_of(forward)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    logits = data.predict(forward, part)["logits"]
    if module is not None and was_training:
        module.train()
    return float(np.nanmean(per_class_accuracy(logits.argmax(1).numpy(), data.labels(part), len(data.class_names))))


def evaluate_accuracy(forward, tensors: Tensors, normalize, device, num_classes: int) -> float | None:
    """Mean per-class accuracy of ``forward`` on device-resident ``tensors`` (a validation split)."""
    return part_accuracy(_tensor_parts(tensors, normalize, device, num_classes), forward, "val")


def _module_of(forward) -> nn.Module | None:
    """The module a forward callable belongs to (itself, or a bound method's owner)."""
    module = forward if isinstance(forward, nn.Module) else getattr(forward, "__self__", None)
    return module if isinstance(module, nn.Module) else None


def validation_split(data, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) into ``data.pool``; never the test set.

    Validation images come from pool images outside the long-tailed subset
    (``holdout_indices``). When the pool has no spare image for some class, that class gives
    up to ``per_class`` images, but at most a fifth of its LT images, from the training subset.
    """
    from bvkit.data import holdout_indices

    train_idx = np.asarray(data.train_indices, dtype=np.int64)
    val_idx = np.asarray(holdout_indices(data, per_class, seed), dtype=np.int64)
    labels = np.asarray(data.pool.labels)
    num_classes = len(data.class_names)
    covered = np.bincount(labels[val_idx], minlength=num_classes) > 0
    if covered.all():
        return train_idx, val_idx
    train_idx, carved = carve_per_class(labels, train_idx, np.flatnonzero(~covered), per_class, seed)
    return train_idx, np.concatenate([val_idx, carved])


def carve_per_class(labels, train_idx, classes, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices left, validation indices): each of ``classes`` gives up to ``per_class``
    of its images in ``train_idx``, but at most a fifth of them (a class of fewer than 5 gives
    none), drawn with a generator seeded from ``seed``."""
    labels = np.asarray(labels)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    rng = np.random.default_rng([seed, 1])
    ordered = np.argsort(labels[train_idx], kind="stable")  # each class's members in train_idx order
    sorted_labels = labels[train_idx][ordered]
    carved = []
    for c in classes:
        lo, hi = np.searchsorted(sorted_labels, [c, c + 1])
        members = train_idx[ordered[lo:hi]]
        take = min(per_class, len(members) // 5)
        if take:
            carved.append(rng.choice(members, size=take, replace=False))
    if not carved:
        return train_idx, np.zeros(0, dtype=np.int64)
    carved = np.concatenate(carved)
    return train_idx[~np.isin(train_idx, carved)], carved


def measure_mflops(model: nn.Module, image_size: int, expert_usage=None) -> float | None:
    """MFLOPs per image (``bvkit.models.count_flops``); routed RIDE: at the measured expert usage
    (shares of samples using 1..n experts), routers included."""
    from bvkit.models import count_flops

    kwargs = {"input_size": image_size}
    if expert_usage is not None:
        kwargs["expert_usage"] = [100.0 * share for share in expert_usage]
    return round(float(count_flops(model, **kwargs)["mflops"]), 2)


def write_outputs(out: Path, metrics: dict, labels, logits, counts, class_names, history) -> None:
    import pandas as pd

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_prediction_file(out / "predictions.npz", labels, logits[None], counts, class_names)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)


def save_prediction_file(path: Path, labels, logits, train_counts, class_names) -> None:
    """DESIGN.md's prediction file: labels (N,), logits (1, N, C), train_counts, class_names."""
    try:
        from bvkit.decompose.io import save_predictions
    except ImportError:
        save_predictions = None
    if save_predictions is not None:
        save_predictions(path, labels, logits=logits, train_counts=train_counts, class_names=class_names)
        return
    np.savez(path, labels=np.asarray(labels, dtype=np.int64), logits=np.asarray(logits, dtype=np.float32),
             train_counts=np.asarray(train_counts, dtype=np.int64), class_names=np.asarray(class_names, dtype=str))


def _load_data(dataset, imbalance, data_root, n_max):
    """A ``LongTailed`` (given, or made by name) or a file-list benchmark by name."""
    if not isinstance(dataset, str):
        return dataset
    from bvkit.data import (
        DATASETS,
        FILE_LIST_DATASETS,
        list_benchmarks,
        list_datasets,
        load_benchmark,
        make_long_tailed,
    )

    if dataset in FILE_LIST_DATASETS:
        return load_benchmark(dataset, data_root)
    if dataset not in DATASETS:
        raise BvkitError(f"unknown dataset {dataset!r}; choose one of {', '.join(list_datasets() + list_benchmarks())}")

    kwargs = {"imbalance": imbalance, "root": data_root}
    if n_max is not None:
        kwargs["n_max"] = n_max
    return make_long_tailed(dataset, **kwargs)


def _augment(recipe: Recipe, data):
    from bvkit.data import Augment

    kwargs = dict(recipe.augment)
    if "mean" not in kwargs:  # the dataset's published (CIFAR) or measured normalisation
        kwargs["mean"], kwargs["std"] = tuple(data.mean), tuple(data.std)
    return Augment(**kwargs)


def _normalizer(augment):
    from bvkit.data import normalize

    return lambda x: normalize(x, augment.mean, augment.std)


def _to_device(images: np.ndarray, labels: np.ndarray, device: torch.device) -> Tensors:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
    return Tensors(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device))


def _shot_splits(counts):
    from bvkit.data import shot_splits

    return shot_splits(counts)


def _imbalance_of(data, imbalance):
    counts = np.asarray(data.counts)
    if isinstance(data, ListData):  # a file list's own imbalance, over the classes it has
        counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if counts.min() > 0 else float(imbalance)


def _resume_payload(out: Path | None, run_key: dict) -> dict | None:
    if out is None or not (out / CHECKPOINT).is_file():
        return None
    payload = load_checkpoint(out / CHECKPOINT)
    if json.loads(payload.get("run_key", "{}")) != json.loads(json.dumps(run_key, sort_keys=True)):
        raise BvkitError(f"{out} holds a checkpoint of a different run; use another --out or --no-resume")
    return payload


def _load_state(model: nn.Module, state: dict, what: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BvkitError(f"{what} does not fit the recipe's model: {str(err).splitlines()[0]}") from None
