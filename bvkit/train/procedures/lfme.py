"""LFME (Xiang, Ding & Han, ECCV 2020): learning from multiple experts by self-paced distillation.

1. **Groups.** The classes are cut by training count into three cardinality-adjacent groups: the
   shot splits many / medium / few (``bvkit.data.profiles.shot_splits``: > 100, 20..100, < 20
   images). When a split is empty (CIFAR-10-LT at IF 100 has no few-shot class), the classes
   sorted by count (ties by class index) are cut instead into three contiguous runs of
   near-equal class count, larger runs first (``head``, ``middle``, ``tail``): three non-empty
   groups whenever there are at least 3 classes.
2. **Experts.** One plain ``ce`` run per group, ``env.subrun("expert-<group>", "ce", ...)`` with
   the student's architecture and optimisation settings, on that group's training images only,
   relabelled as a K-class problem (``group_data``): a K-way classifier as in the official code
   (an all-class classifier is not an option: the CE loss refuses classes without images).
3. **Student.** The same architecture on the whole long-tailed set with
   ``CE + lambda * mean_i w_g(i) s_i KL(softmax(z_e / T) || softmax(z_s / T))``, where sample
   i's group g(i) expert gives z_e on the same augmented batch and z_s is the student's logits
   on that group's classes. No T^2 factor, as in the official DistillationLoss.

   * Self-paced expert selection: after every epoch the student's mean class accuracy on each
     group's validation images (predicting among all classes, as the official code measures
     it) against the expert's (among its group's classes) sets the next epoch's ``w_g``: 1
     while ``acc_student <= threshold * acc_expert``, then
     ``(acc_expert - acc_student) / ((1 - threshold) acc_expert)``, reaching 0 at the expert's
     accuracy (official ``get_distill_loss_weight``). The first epoch has ``w_g = 1``.
   * Curriculum instance selection: each group's training images are ranked easiest first by
     their expert's confidence (softmax probability of the true class, un-augmented); in
     0-based epoch e only the easiest ``ceil(f(e) n_g)`` of a group's images are distilled,
     ``f`` rising linearly from ``curriculum_start`` to 1 at ``curriculum_epochs`` (scaled
     with ``epochs`` like the lr milestones).

Departures from the released code (ImageNet-LT only): there every expert distils every sample
on its own classes and the curriculum is a soft per-instance weight on the logits; this port
distils each sample from its own group's expert and selects a growing fraction. The training
targets are ``(label, position in the training set)`` pairs, so the epoch's training accuracy
is not counted (the per-epoch validation accuracy is).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bvkit.data import DeviceLoader, ImageSet
from bvkit.data.profiles import SPLITS, shot_splits
from bvkit.errors import BvkitError
from bvkit.train.builders import build_loss, build_model, make_optimizer, recipe_schedule
from bvkit.train.loop import Phase, derive_seed, freeze, predict
from bvkit.train.metrics import per_class_accuracy
from bvkit.train.procedures import ProcedureEnv, register_procedure
from bvkit.train.schedule import scale_epoch

OPTIONS = ("temperature", "distill_weight", "self_paced_threshold", "curriculum_start", "curriculum_epochs")
# what an expert takes over from the student's recipe: one architecture and one optimisation
# for all four networks, and a caller's size overrides reach the experts too
EXPERT_SETTINGS = ("model", "model_kwargs", "epochs", "batch_size", "lr", "momentum", "nesterov",
                   "weight_decay", "schedule", "warmup_epochs", "lr_milestones", "lr_factors",
                   "reference_epochs", "augment", "val_per_class")


def class_groups(train_counts) -> dict[str, np.ndarray]:
    """Group name -> its classes (ascending), most frequent group first; see the module doc."""
    counts = np.asarray(train_counts)
    if len(counts) < 3:
        raise BvkitError(f"lfme needs at least 3 classes to form its 3 expert groups, got {len(counts)}")
    splits = shot_splits(counts)
    if all((splits == name).any() for name in SPLITS):
        return {name: np.flatnonzero(splits == name) for name in SPLITS}
    by_count = np.argsort(-counts, kind="stable")
    return {name: np.sort(run) for name, run in zip(("head", "middle", "tail"), np.array_split(by_count, 3))}


def self_paced_weight(student_accuracy: float, expert_accuracy: float, threshold: float) -> float:
    """An expert's distillation weight: 1 up to ``threshold`` x its accuracy, linear down to 0
    at its accuracy. Without a measured accuracy (no validation image) the expert stays on."""
    if not (math.isfinite(student_accuracy) and math.isfinite(expert_accuracy)):
        return 1.0
    if student_accuracy >= expert_accuracy:
        return 0.0
    if student_accuracy <= threshold * expert_accuracy:
        return 1.0
    return (expert_accuracy - student_accuracy) / ((1.0 - threshold) * expert_accuracy)


def curriculum_fraction(epoch: int, start: float, full_epoch: int) -> float:
    """Share of each group's images distilled in 0-based ``epoch``: ``start`` rising linearly
    to 1 at ``full_epoch``."""
    if epoch >= full_epoch:
        return 1.0
    return start + (1.0 - start) * epoch / full_epoch


def easiest_first_ranks(confidence: np.ndarray, sample_group: np.ndarray) -> np.ndarray:
    """Each sample's rank within its group by descending ``confidence`` (0 = easiest; ties by
    position)."""
    ranks = np.empty(len(confidence), dtype=np.int64)
    for g in np.unique(sample_group):
        members = np.flatnonzero(sample_group == g)
        ranks[members[np.argsort(-confidence[members], kind="stable")]] = np.arange(len(members))
    return ranks


def group_distillation(student: torch.Tensor, teacher: torch.Tensor, class_mask: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Per-sample ``KL(softmax(teacher / T) || softmax(student / T))`` over the classes where
    ``class_mask`` (B, C) is true; the other classes take no part."""
    # a large finite fill, not -inf: a left-out class then has probability 0 and adds 0 * finite
    fill = -1e9
    log_q = F.log_softmax((student.float() / temperature).masked_fill(~class_mask, fill), dim=1)
    log_p = F.log_softmax((teacher.float() / temperature).masked_fill(~class_mask, fill), dim=1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)


class PositionLoader(DeviceLoader):
    """A DeviceLoader whose targets are ``(label, position in the training set)`` pairs (B, 2),
    so the loss can look up each sample's curriculum state."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, balanced: bool, augment, seed: int):
        drop_last = len(y) % batch_size == 1  # a last batch of one image breaks train-mode BatchNorm
        super().__init__(x, torch.arange(len(y), device=y.device), batch_size, shuffle=True,
                         drop_last=drop_last, balanced=balanced, augment=augment, seed=seed)
        self.labels = y  # class-balanced sampling balances the labels, not the positions

    def __iter__(self):
        for inputs, positions in super().__iter__():
            yield inputs, torch.stack((self.labels[positions], positions), 1)


class LFMELoss(nn.Module):
    """``base(logits, y) + weight * mean_i w_g(i) s_i KL_i`` (see the module doc).

    Its state (checkpointed with the student) is the experts' validation accuracies, the
    student's latest ones and the curriculum ranks; ``set_epoch`` turns them into the epoch's
    expert weights ``w_g`` and selected samples ``s_i``.
    """

    def __init__(self, base: nn.Module, group_of_class: np.ndarray, train_labels: np.ndarray,
                 ranks: np.ndarray, expert_accuracy: list[float], *, temperature: float,
                 distill_weight: float, self_paced_threshold: float, curriculum_start: float,
                 curriculum_epochs: int):
        super().__init__()
        n_groups = len(expert_accuracy)
        self.base = base
        self.temperature, self.distill_weight = temperature, distill_weight
        self.threshold, self.start, self.full_epoch = self_paced_threshold, curriculum_start, curriculum_epochs
        sample_group = group_of_class[train_labels]
        self.group_sizes = np.bincount(sample_group, minlength=n_groups)
        in_group = group_of_class[None, :] == np.arange(n_groups)[:, None]
        # fixed by the grouping, rebuilt on resume: not checkpointed
        self.register_buffer("group_of_class", torch.as_tensor(group_of_class), persistent=False)
        self.register_buffer("in_group", torch.as_tensor(in_group), persistent=False)
        self.register_buffer("sample_group", torch.as_tensor(sample_group), persistent=False)
        # the epoch's expert weights and selected samples, set by set_epoch
        self.register_buffer("weight_of_group", torch.ones(n_groups), persistent=False)
        self.register_buffer("selected", torch.ones(len(train_labels), dtype=torch.bool), persistent=False)
        # measured, so checkpointed: a resumed run goes on with exactly these
        self.register_buffer("ranks", torch.as_tensor(ranks, dtype=torch.long))
        self.register_buffer("expert_accuracy", torch.tensor(expert_accuracy, dtype=torch.float64))
        self.register_buffer("student_accuracy", torch.zeros(n_groups, dtype=torch.float64))
        self.set_epoch(0)

    def expert_weights(self) -> list[float]:
        return [self_paced_weight(s, e, self.threshold)
                for s, e in zip(self.student_accuracy.tolist(), self.expert_accuracy.tolist())]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
        self.fraction = curriculum_fraction(epoch, self.start, self.full_epoch)
        # round first: 0.7 * 10 must select 7 images, not ceil(7.000000000000001) = 8
        limits = np.ceil(np.round(self.fraction * self.group_sizes, 9)).astype(np.int64)
        self.selected.copy_(self.ranks < torch.as_tensor(limits, device=self.ranks.device)[self.sample_group])
        self.weight_of_group.copy_(torch.tensor(self.expert_weights()))

    def forward(self, output: dict, targets: torch.Tensor) -> torch.Tensor:
        labels, positions = targets[:, 0], targets[:, 1]
        logits = output["logits"]
        group = self.group_of_class[labels]
        teacher = output["expert_logits"][group, torch.arange(len(labels), device=labels.device)]
        kl = group_distillation(logits, teacher, self.in_group[group], self.temperature)
        weight = self.weight_of_group[group] * self.selected[positions]
        return self.base(output, labels) + self.distill_weight * (weight * kl).mean()


def _options(env: ProcedureEnv) -> dict:
    options = env.options()
    if set(options) != set(OPTIONS):
        raise BvkitError(f"lfme takes the procedure options {', '.join(OPTIONS)}; "
                         f"got {', '.join(sorted(options))}")
    if not options["temperature"] > 0 or not options["distill_weight"] >= 0:
        raise BvkitError("lfme needs temperature > 0 and distill_weight >= 0")
    if not 0 <= options["self_paced_threshold"] < 1 or not 0 < options["curriculum_start"] <= 1:
        raise BvkitError("lfme needs 0 <= self_paced_threshold < 1 and 0 < curriculum_start <= 1")
    if options["curriculum_epochs"] < 0:
        raise BvkitError("lfme needs curriculum_epochs >= 0")
    return options


def group_data(data, classes: np.ndarray, train_indices: np.ndarray):
    """``data`` (a LongTailed) cut down to ``classes``, relabelled ``0..K-1`` in ascending class
    order: an expert's own K-class problem, its training images ``train_indices`` (into
    ``data.pool``), its pool (validation) and test images those of its classes."""
    local = np.full(data.n_classes, -1)
    local[classes] = np.arange(len(classes))
    names = [data.class_names[c] for c in classes]

    def restrict(images: ImageSet) -> tuple[ImageSet, np.ndarray]:
        kept = np.flatnonzero(np.isin(images.labels, classes))
        return ImageSet(images.images[kept], local[images.labels[kept]], names), kept

    pool, kept = restrict(data.pool)
    return replace(data, pool=pool, test=restrict(data.test)[0], counts=np.asarray(data.counts)[classes],
                   train_indices=np.searchsorted(kept, train_indices))


def _predict(model: nn.Module, x: torch.Tensor, env: ProcedureEnv) -> torch.Tensor:
    """``model``'s logits for uint8 images ``x`` in eval mode (its mode restored after)."""
    was_training = model.training
    model.eval()
    logits = predict(model, x, env.normalizer, env.device, precision=env.precision)["logits"]
    model.train(was_training)
    return logits


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN marks a class without validation images); NaN if none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _mean_class_accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    """Mean over classes of the accuracy of ``logits`` (n, K) on ``labels`` in ``0..K-1``."""
    return _nanmean(per_class_accuracy(logits.argmax(1).numpy(), labels, logits.shape[1]))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@register_procedure("lfme")
def lfme(env: ProcedureEnv) -> nn.Module:
    """Train one CE expert per class group, then the student distilled from them; return the student."""
    options = _options(env)
    if len(env.val_set.y) == 0:
        raise BvkitError("lfme needs validation images for its self-paced expert selection")
    groups = class_groups(env.train_counts)
    group_of_class = np.empty(env.n_classes, dtype=np.int64)
    for g, classes in enumerate(groups.values()):
        group_of_class[classes] = g
    train_labels = np.asarray(env.long_tailed.pool.labels)[env.train_idx]
    val_labels = env.val_set.y.cpu().numpy()
    experts, expert_accuracy, confidence, report = _train_experts(env, groups, group_of_class, train_labels,
                                                                  val_labels)
    model, loss = _train_student(env, options, groups, group_of_class, train_labels, val_labels, experts,
                                 expert_accuracy, confidence)
    for entry, student, weight in zip(report.values(), loss.student_accuracy.tolist(), loss.expert_weights()):
        entry.update(student_val_accuracy=_finite(student), distill_weight=weight)
    n_student = len(train_labels)
    env.metrics.update(
        grouping="shot-splits" if "many" in groups else "equal-class-thirds",
        experts=report,
        training_images_relative=(sum(entry["n_train"] for entry in report.values()) + n_student) / n_student,
    )
    return model


def _train_experts(env: ProcedureEnv, groups: dict[str, np.ndarray], group_of_class: np.ndarray,
                   train_labels: np.ndarray, val_labels: np.ndarray):
    """One frozen ``ce`` expert per group (a nested run on its own K-class problem), in group
    order; returns ``(experts, their validation accuracies, each training image's confidence
    under its group's expert, report)``."""
    settings = {name: getattr(env.recipe, name) for name in EXPERT_SETTINGS}
    experts, expert_accuracy, confidence, report = [], [], np.zeros(len(train_labels)), {}
    for g, (name, classes) in enumerate(groups.items()):
        members = np.flatnonzero(group_of_class[train_labels] == g)
        result = replace(env, long_tailed=group_data(env.long_tailed, classes, env.train_idx[members])).subrun(
            f"expert-{name}", "ce", **settings)
        expert = result.model.eval()
        freeze(expert)
        experts.append(expert)
        val_members = np.flatnonzero(group_of_class[val_labels] == g)
        val_x = env.val_set.x[torch.as_tensor(val_members, device=env.device)]
        val_local = np.searchsorted(classes, val_labels[val_members])
        expert_accuracy.append(_mean_class_accuracy(_predict(expert, val_x, env), val_local)
                               if len(val_members) else float("nan"))
        # curriculum difficulty: the expert's probability of the true class, un-augmented
        train_x = env.train_set.x[torch.as_tensor(members, device=env.device)]
        local = torch.as_tensor(np.searchsorted(classes, train_labels[members]))
        probs = _predict(expert, train_x, env).softmax(1)
        confidence[members] = probs.gather(1, local[:, None])[:, 0].numpy()
        report[name] = {"classes": classes.tolist(), "n_train": result.metrics["n_train"],
                        "train_seconds": result.metrics["train_seconds"],
                        "val_accuracy": _finite(expert_accuracy[-1])}
    return experts, expert_accuracy, confidence, report


def _train_student(env: ProcedureEnv, options: dict, groups: dict[str, np.ndarray], group_of_class: np.ndarray,
                   train_labels: np.ndarray, val_labels: np.ndarray, experts: list[nn.Module],
                   expert_accuracy: list[float], confidence: np.ndarray) -> tuple[nn.Module, LFMELoss]:
    """The student trained on the whole set with CE + the experts' self-paced, curriculum
    distillation; returns it with its loss (which holds the last weights and accuracies)."""
    recipe = env.recipe
    class_index = [torch.as_tensor(classes, device=env.device) for classes in groups.values()]
    model = build_model(recipe, env.n_classes, env.in_channels, env.seed, env.device)
    loss = LFMELoss(
        build_loss(recipe, env.train_counts, env.device), group_of_class, train_labels,
        easiest_first_ranks(confidence, group_of_class[train_labels]), expert_accuracy,
        temperature=options["temperature"], distill_weight=options["distill_weight"],
        self_paced_threshold=options["self_paced_threshold"], curriculum_start=options["curriculum_start"],
        curriculum_epochs=scale_epoch(options["curriculum_epochs"], recipe.epochs, recipe.reference_epochs),
    ).to(env.device)

    def spread(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """An expert's (B, K) logits in its classes' columns of a (B, C) tensor (zeros elsewhere)."""
        return logits.new_zeros(len(logits), env.n_classes).index_copy(1, index, logits)

    def forward(x):
        with torch.no_grad():
            expert_logits = torch.stack([spread(expert(x), index) for expert, index in zip(experts, class_index)])
        return {"logits": model(x), "expert_logits": expert_logits}

    def validate() -> float:
        """The student's validation accuracy; its accuracy on each group's classes (predicting
        among all classes, as the official code does) goes to the loss for the next weights."""
        logits = _predict(model, env.val_set.x, env)
        per_class = per_class_accuracy(logits.argmax(1).numpy(), val_labels, env.n_classes)
        accuracy = [_nanmean(per_class[classes]) for classes in groups.values()]
        loss.student_accuracy.copy_(torch.tensor(accuracy, dtype=torch.float64))
        if env.ctx.log is not None:
            env.ctx.log("lfme student / expert val accuracy (next distillation weight): " + ", ".join(
                f"{name} {s:.3f} / {e:.3f} ({w:.2f})"
                for name, s, e, w in zip(groups, accuracy, expert_accuracy, loss.expert_weights())))
        return _nanmean(per_class)

    loader = PositionLoader(env.train_set.x, env.train_set.y, recipe.batch_size, recipe.balanced, env.augment,
                            derive_seed(env.seed, 0))
    optimizer = make_optimizer(list(model.parameters()) + list(loss.parameters()), recipe.lr, recipe.momentum,
                               recipe.nesterov, recipe.weight_decay)
    phase = Phase("lfme", 0, model, forward, loss, optimizer, loader, recipe_schedule(recipe, len(loader)),
                  recipe.lr, set_modes=model.train,
                  count_correct=False,  # targets are (label, position) pairs
                  shard=False,  # the student is not DDP-wrapped: every rank runs the whole batch
                  validate=validate, precision=env.precision)
    env.run(phase, recipe.epochs)
    return model, loss
