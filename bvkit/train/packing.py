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

This module only packs and unpacks: the runs' models, losses and data into one
:class:`bvkit.train.loop.Phase` (``Phase.pack``: :class:`Pack`), which ``train_phase`` trains
like any phase, with one ``LoopContext`` per run: each run records the history, checkpoints,
progress file and TensorBoard scalars of a single run, and a pack interrupted after an epoch
resumes from its runs' checkpoints (each a single run's: its model, optimiser and loss state
unpacked), as does each of its runs trained alone. Each run is then unpacked into its single
model and evaluated and written by ``bvkit.train.outputs.finish_run``, as ``train()`` does.

Data: every run's uint8 images sit on the device. At the start of an epoch each run's order
and augmentation parameters are drawn from that run's own epoch generator in exactly the order
``DeviceLoader`` + ``Augment`` draw them (:class:`PackedLoader`); each step gathers and
augments all ``K`` batches in one call. Validation and the test set watched along training
(``TestWatch``) run every run's images through the packed network in one pass
(:class:`PackPredictions`). The recipe's precision as in a single run, on CUDA channels_last,
and the packed forward through ``torch.compile`` as ``compile`` says (``bvkit.train.compiling``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bvkit.data.loaders import crop_flip_rotate_with, normalize
from bvkit.errors import BvkitError
from bvkit.methods import Recipe, create_method
from bvkit.models.packed_models import pack_models, pack_state, unpack_state
from bvkit.train.builders import build_loss, build_model, make_optimizer, recipe_schedule
from bvkit.train.checkpoint import load_state, restore_rng
from bvkit.train.compiling import CompileRecord, check_compile, compile_forward, resolve_compile
from bvkit.train.data import device_tensors, load_data, make_loader, prepare_data
from bvkit.train.devices import autocast, resolve_device
from bvkit.train.evaluation import TestWatch, first_drop_epoch, snapshot_every, validation_record
from bvkit.train.loop import LoopContext, Phase, derive_seed, prepare_batch, train_phase
from bvkit.train.outputs import checkpoint_keys, finish_run, resume_payload, run_key
from bvkit.train.tensorboard import EpochScalars


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


@dataclass
class _Member:
    """A member while its pack trains: its data, the checkpoint it resumes (if any), its context."""

    member: PackMember
    data: Any
    payload: dict | None
    ctx: LoopContext | None = None

    @property
    def start(self) -> int:
        return int(self.payload["epoch"]) if self.payload is not None else 0


def train_packed(
    method: str | Recipe,
    dataset: Any,
    members: list[PackMember],
    *,
    imbalance: float = 100.0,
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    n_max: int | None = None,
    compile: str = "auto",
    progress: bool | None = None,
    log=None,
    resume: bool = True,
    cuda_graphs: bool = True,
    tensorboard: bool = False,
    **overrides: Any,
) -> list[PackedRunResult]:
    """Train ``members`` (runs of ``method`` on ``dataset``) packed; one result per member, in
    order. Runs whose training sets differ in size, or that resume from different epochs, go
    into separate packs. Each member's ``out`` gets the files a single ``bvkit.train.train``
    run writes, its checkpoint after every epoch included, and a member whose ``out`` holds
    one resumes from it (unless ``resume=False``). ``log`` gets each run's epoch lines;
    ``tensorboard``: each run's epochs as TensorBoard scalars in its ``out/tensorboard``."""
    if not members:
        return []
    recipe = create_method(method, dataset=getattr(dataset, "name", None), **overrides)
    if not packable(recipe):
        raise BvkitError(f"method {recipe.name!r} cannot be packed (second stages, a teacher or model {recipe.model})")
    data = load_data(dataset, imbalance, data_root, n_max)
    if not hasattr(data, "pool"):
        raise BvkitError(f"the packed engine trains data held on the device (cifar10-lt, ...), not {data.name}")
    if tensorboard and any(member.out is None for member in members):
        raise BvkitError("tensorboard needs an output directory (out) for every run of the pack")
    check_compile(compile)
    device = resolve_device(device)
    test_set = device_tensors(data.test, device)  # one copy, shared by the runs
    runs = []
    for member in members:
        member_data = data if member.train_indices is None else replace(
            data, train_indices=np.asarray(member.train_indices, dtype=np.int64))
        run_data = replace(prepare_data(member_data, recipe, member.seed, device, test=False), test_set=test_set)
        out = Path(member.out) if member.out is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        payload = resume_payload(out, run_key(recipe, run_data, member.seed)) if resume else None
        runs.append(_Member(member, run_data, payload))
    results: list[PackedRunResult | None] = [None] * len(members)
    options = {"compile": compile, "progress": progress, "log": log, "cuda_graphs": cuda_graphs,
               "tensorboard": tensorboard, "imbalance": imbalance}
    for key in dict.fromkeys((len(run.data.train_idx), run.start) for run in runs):
        group = [i for i, run in enumerate(runs) if (len(run.data.train_idx), run.start) == key]
        for i, result in zip(group, _train_pack(recipe, [runs[i] for i in group], device, **options)):
            results[i] = result
    return results


# ---------------------------------------------------------------------------------------------


def _train_pack(recipe: Recipe, runs: list[_Member], device, *, compile: str, progress, log, cuda_graphs, tensorboard,
                imbalance) -> list[PackedRunResult]:
    started = time.perf_counter()
    size, first = len(runs), runs[0].data
    models = [build_model(recipe, len(first.class_names), first.in_channels, run.member.seed, device) for run in runs]
    losses = [build_loss(recipe, run.data.train_counts, device) for run in runs]
    packed = pack_models(models)
    if device.type == "cuda":
        packed = packed.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(list(packed.parameters()) + [p for loss in losses for p in loss.parameters()],
                               recipe.lr, recipe.momentum, recipe.nesterov, recipe.weight_decay)
    loader = PackedLoader([make_loader(run.data.train_set, recipe.batch_size, recipe.balanced, run.data.augment,
                                       derive_seed(run.member.seed, 0)) for run in runs],
                          [run.data.augment for run in runs])
    schedule = recipe_schedule(recipe, len(loader))
    compiled = CompileRecord(compile, *resolve_compile(compile, device, recipe.epochs * len(loader)))
    for k, run in enumerate(runs):
        run.ctx = _run_context(recipe, run, device, progress, cuda_graphs, tensorboard,
                               (lambda line, k=k: log(f"[pack {k + 1}/{size}] {line}")) if log is not None else None)
    predictions = PackPredictions(packed, [run.data for run in runs], device, first.precision)
    views = [RunView(run.data, predictions, k) for k, run in enumerate(runs)]
    watches = [TestWatch(view, None, run.ctx.out, first_drop_epoch(schedule), snapshot_every(recipe.epochs))
               for view, run in zip(views, runs)]
    pack = Pack(packed, models, losses, optimizer)
    phase = Phase("stage1", 0, packed, compile_forward(packed) if compiled.enabled else packed,
                  PackLoss(packed, losses), optimizer, loader, schedule, recipe.lr, set_modes=packed.train,
                  watch=lambda epoch: predictions.clear() or [watch(epoch) for watch in watches],
                  validate=lambda: predictions.clear() or [validation_record(view, None) for view in views],
                  checkpoint_extra={"stage_epochs": recipe.epochs}, precision=first.precision, pack=pack)
    start = pack.restore([run.payload for run in runs])
    if start:
        restore_rng(runs[0].payload, device)
    train_phase(phase, recipe.epochs, [run.ctx for run in runs], start_epoch=start,
                cuda_graphs=cuda_graphs and not compiled.enabled)
    pack_seconds = time.perf_counter() - started
    compile_record = compiled.record()
    results = []
    for k, (run, model) in enumerate(zip(runs, models)):
        model.load_state_dict(unpack_state(packed, k))
        metrics, _, _ = finish_run(run.ctx, recipe, model, None, run.data, imbalance=imbalance, epochs=recipe.epochs,
                                   extra={"precision": run.data.precision, "compile": compile_record},
                                   started=time.perf_counter() - pack_seconds / size, pack_size=size)
        if run.ctx.on_epoch is not None:
            run.ctx.on_epoch.close()
        results.append(PackedRunResult(metrics, model, run.ctx.history, run.ctx.out))
    return results


def _run_context(recipe: Recipe, run: _Member, device, progress, cuda_graphs: bool, tensorboard: bool,
                 log) -> LoopContext:
    """One run's ``LoopContext`` in its pack: its output directory, history (a resumed run's so
    far), checkpoint keys and TensorBoard writer, as ``train()`` makes a single run's."""
    out = Path(run.member.out) if run.member.out is not None else None
    history = json.loads(run.payload.get("history", "[]")) if run.payload is not None else []
    return LoopContext(device=device, seed=run.member.seed, out=out, progress=progress, history=history,
                       checkpoint_keys=checkpoint_keys(recipe, run.data, run.member.seed), log=log,
                       on_epoch=EpochScalars(out) if tensorboard else None, cuda_graphs=cuda_graphs)


class Pack:
    """What ``train_phase`` needs of a packed phase's ``K`` runs (``Phase.pack``): ``size``, and each
    run's model, optimiser and loss state as if it had trained alone (``run_states``: what its
    checkpoint holds), and back (``restore``). A run's optimiser state indexes its parameters
    as a single run's optimiser does: its model's, then its loss's."""

    def __init__(self, packed, models: list, losses: list, optimizer):
        self.packed, self.models, self.losses, self.optimizer = packed, models, losses, optimizer
        self.size = len(models)
        names = [name for name, _ in packed.named_parameters()]
        self.single_names = [name for name, _ in models[0].named_parameters()]  # a single model's order
        if sorted(names) != sorted(self.single_names):
            raise BvkitError("the packed network's parameters are not the single model's")
        self.index = {name: i for i, name in enumerate(names)}  # into the packed optimiser's parameters
        self.loss_index, offset = [], len(names)
        for loss in losses:
            count = len(list(loss.parameters()))
            self.loss_index.append(list(range(offset, offset + count)))
            offset += count

    def run_states(self, optimizer_state: dict) -> list[dict]:
        """Each run's ``model``, ``optimizer`` and ``loss`` state, from the packed optimiser's state."""
        per_key: dict[str, dict] = {}  # a state key (momentum_buffer) -> {parameter name: packed tensor}
        for name, i in self.index.items():
            for key, value in optimizer_state["state"].get(i, {}).items():
                if torch.is_tensor(value):
                    per_key.setdefault(key, {})[name] = value
        states = []
        for k in range(self.size):
            unpacked = {key: unpack_state(self.packed, k, tensors) for key, tensors in per_key.items()}
            run_state = {}
            for j, name in enumerate(self.single_names):
                entry = optimizer_state["state"].get(self.index[name])
                if entry is not None:
                    run_state[j] = {key: unpacked[key][name] if torch.is_tensor(value) else value
                                    for key, value in entry.items()}
            for j, i in enumerate(self.loss_index[k], start=len(self.single_names)):
                if i in optimizer_state["state"]:
                    run_state[j] = dict(optimizer_state["state"][i])
            (group,) = optimizer_state["param_groups"]
            params = list(range(len(self.single_names) + len(self.loss_index[k])))
            optimizer = {"state": run_state, "param_groups": [{**group, "params": params}]}
            states.append({"model": unpack_state(self.packed, k), "optimizer": optimizer,
                           "loss": self.losses[k].state_dict()})
        return states

    def restore(self, payloads: list[dict | None]) -> int:
        """The epoch the pack starts from: 0 without checkpoints, else that of the runs'
        checkpoint ``payloads`` (one per run, all after the same epoch of stage one), whose
        model, optimiser and loss states are packed and loaded."""
        if all(payload is None for payload in payloads):
            return 0
        if any(p is None or p.get("stage") != 0 or p["epoch"] != payloads[0]["epoch"] for p in payloads):
            raise BvkitError("the runs of a pack resume from checkpoints of one epoch of stage one")
        for model, payload in zip(self.models, payloads):
            load_state(model, payload["model"], "checkpoint model")
        self.packed.load_state_dict(pack_state(self.packed, [model.state_dict() for model in self.models]))
        if all(payload.get("optimizer") for payload in payloads):
            self.optimizer.load_state_dict(self._packed_optimizer([payload["optimizer"] for payload in payloads]))
        for loss, payload in zip(self.losses, payloads):
            if payload.get("loss"):
                loss.load_state_dict(payload["loss"])
        return int(payloads[0]["epoch"])

    def _packed_optimizer(self, run_states: list[dict]) -> dict:
        """The packed optimiser's state holding the runs' own (``run_states``)."""
        params = dict(self.packed.named_parameters())
        state: dict[int, dict] = {}
        tensors: dict[str, list[dict]] = {}  # a state key -> per run {parameter name: tensor}
        for j, name in enumerate(self.single_names):
            entries = [run["state"].get(j) for run in run_states]
            if all(entry is None for entry in entries):
                continue
            if any(entry is None for entry in entries):
                raise BvkitError(f"the runs of a pack hold optimiser state for {name} in some checkpoints only")
            state[self.index[name]] = {key: value for key, value in entries[0].items() if not torch.is_tensor(value)}
            for key, value in entries[0].items():
                if torch.is_tensor(value):
                    for k, entry in enumerate(entries):
                        tensors.setdefault(key, [{} for _ in run_states])[k][name] = entry[key]
        for key, per_run in tensors.items():
            packed = pack_state(self.packed, per_run, like={name: params[name] for name in per_run[0]})
            for name, value in packed.items():
                state[self.index[name]][key] = value
        for k, run in enumerate(run_states):
            for j, i in enumerate(self.loss_index[k], start=len(self.single_names)):
                if j in run["state"]:
                    state[i] = run["state"][j]
        (group,) = run_states[0]["param_groups"]
        return {"state": state, "param_groups": [{**group, "params": list(range(len(self.optimizer.param_groups[0]["params"])))}]}


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


class PackedLoader:
    """The runs' own ``DeviceLoader``s in lockstep: each batch is every run's batch ``b``,
    gathered and augmented in one call (``packed_batch``): inputs (B, K * C, H, W), targets (K, B)."""

    def __init__(self, loaders: list, augments: list):
        self.loaders, self.augments = loaders, augments
        self.plans = None

    def __len__(self) -> int:
        return len(self.loaders[0])

    def set_epoch(self, epoch: int) -> None:
        self.plans = [loader.plan(epoch) for loader in self.loaders]

    def __iter__(self):
        for b in range(len(self)):
            yield packed_batch(self.plans, b, self.augments)


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


class PackPredictions:
    """The pack's outputs over one part (``val``, ``test``) of every run's data, made in one
    packed pass (``packed_outputs``) when a run first asks for them and kept until ``clear``."""

    def __init__(self, packed, datas: list, device: torch.device, precision: str):
        self.packed, self.datas, self.device, self.precision = packed, datas, device, precision
        self.parts: dict[str, list] = {}

    def clear(self) -> None:
        self.parts = {}

    def outputs(self, name: str, k: int) -> dict[str, torch.Tensor]:
        if name not in self.parts:
            self.parts[name] = packed_outputs(self.packed, [data.part(name).x for data in self.datas],
                                              [data.normalizer for data in self.datas], self.device, self.precision)
        return self.parts[name][k]


class RunView:
    """Run ``k``'s data as evaluation code sees it while its pack trains (``validation_record``,
    ``TestWatch``): its predictions are its share of the pack's (the ``forward`` asked for is
    the packed network's run ``k``); everything else is its data's."""

    def __init__(self, data, predictions: PackPredictions, k: int):
        self.data, self.predictions, self.k = data, predictions, k

    def predict(self, forward, name: str) -> dict[str, torch.Tensor]:
        return self.predictions.outputs(name, self.k)

    def __getattr__(self, name: str):
        if name == "data":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.data, name)


@torch.no_grad()
def packed_outputs(packed, xs: list, normalizers: list, device, precision: str,
                   batch_size: int = 1000) -> list[dict[str, torch.Tensor]]:
    """Each run's outputs on its own uint8 images ``xs[k]`` in one packed pass in eval mode (the
    mode restored after), as ``bvkit.train.loop.predict`` gives a single model's: ``logits``
    (N, C) and a multi-expert model's ``expert_logits`` (N, E, C), float32 on the CPU. Shorter
    sets are padded by repeating their last image (an empty one by another set's), padding dropped."""
    was_training = packed.training
    packed.eval()
    longest = max(len(x) for x in xs)
    fallback = next((x for x in xs if len(x)), xs[0])
    parts: list[dict[str, list]] = [{} for _ in xs]
    for start in range(0, longest, batch_size):
        positions = torch.arange(start, min(start + batch_size, longest), device=device)
        batch = [norm((x if len(x) else fallback)[positions.clamp(max=len(x if len(x) else fallback) - 1)])
                 for x, norm in zip(xs, normalizers)]
        with autocast(device, precision):
            out = packed(prepare_batch(torch.cat(batch, dim=1), device))
        for k, part in enumerate(parts):
            value = packed.model_output(out, k)
            outputs = {"logits": value} if torch.is_tensor(value) else {"logits": value["logits"]}
            if not torch.is_tensor(value) and "expert_logits" in value:
                outputs["expert_logits"] = value["expert_logits"].transpose(0, 1)  # (B, E, C): batch first
            for key, tensor in outputs.items():
                part.setdefault(key, []).append(tensor.float())
    packed.train(was_training)
    return [{key: torch.cat(values)[: len(x)].cpu() for key, values in part.items()} for part, x in zip(parts, xs)]
