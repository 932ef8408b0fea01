"""A trained model's evaluation: test accuracy per shot split, validation accuracy, MFLOPs
per image and, for routed RIDE, expert usage (``docs/formats.md``'s metrics.json columns)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from bvkit.data.profiles import ALL, SPLITS, shot_splits, split_means, split_sizes
from bvkit.models import count_flops
from bvkit.train.data import Tensors
from bvkit.train.loop import module_of, predict
from bvkit.train.metrics import expert_usage_by_split, mean_class_accuracy, per_class_accuracy


def evaluate_model(model, routed, data) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, test labels, test logits): accuracy per shot split of the training counts,
    validation accuracy, MFLOPs and, for routed RIDE, expert usage per split."""
    counts = np.asarray(data.counts)
    num_classes = len(counts)
    forward = routed.route if routed is not None else model
    outputs = data.predict(forward, "test")
    logits = outputs["logits"].numpy()
    labels = data.labels("test")
    splits = shot_splits(counts)
    metrics = {
        "accuracy": split_means(per_class_accuracy(logits.argmax(1), labels, num_classes), splits),
        "val_accuracy": validation_record(data, forward)["val_accuracy"],
        "n_test": int(len(labels)),
        "split_sizes": split_sizes(splits),
    }
    usage = None
    if routed is not None:
        metrics["expert_usage"] = expert_usage_by_split(outputs["n_experts"].numpy(), labels, splits,
                                                        routed.num_experts)
        usage = metrics["expert_usage"]["all"]
    metrics["mflops"] = measure_mflops(routed if routed is not None else model, data.image_size, usage)
    return metrics, labels, logits


@torch.no_grad()
def validation_record(data, forward) -> dict[str, float | None]:
    """An epoch's validation columns (``bvkit.train.loop.EpochRecord``): mean per-class
    accuracy overall (``val_accuracy``) and per shot split of the training counts
    (``val_many``, ...; None for a split without classes), and for a routed RIDE forward the
    mean number of experts a validation image used (``val_experts``). All None without a
    validation split."""
    record: dict[str, float | None] = {"val_accuracy": None, **{f"val_{s}": None for s in SPLITS}, "val_experts": None}
    if data.size("val") == 0:
        return record
    with _eval_mode(forward):
        outputs = data.predict(forward, "val")
    labels = data.labels("val")
    by_class = per_class_accuracy(outputs["logits"].argmax(1).numpy(), labels, len(data.class_names))
    means = split_means(by_class, shot_splits(np.asarray(data.counts)))
    record["val_accuracy"] = means[ALL]
    record.update({f"val_{s}": means[s] for s in SPLITS})
    if "n_experts" in outputs:
        record["val_experts"] = float(outputs["n_experts"].float().mean())
    return record


@torch.no_grad()
def evaluate_accuracy(forward, tensors: Tensors, normalize, device, num_classes: int) -> float | None:
    """Mean per-class accuracy of ``forward`` on device-resident ``tensors`` (a validation split)."""
    if len(tensors.y) == 0:
        return None
    with _eval_mode(forward):
        logits = predict(forward, tensors.x, normalize, device)["logits"]
    return mean_class_accuracy(logits.argmax(1).numpy(), tensors.y.cpu().numpy(), num_classes)


def measure_mflops(model: nn.Module, image_size: int, expert_usage=None) -> float | None:
    """MFLOPs per image (``bvkit.models.count_flops``); routed RIDE: at the measured expert usage
    (shares of samples using 1..n experts), routers included."""
    kwargs = {"input_size": image_size}
    if expert_usage is not None:
        kwargs["expert_usage"] = [100.0 * share for share in expert_usage]
    return round(float(count_flops(model, **kwargs)["mflops"]), 2)


@contextlib.contextmanager
def _eval_mode(forward):
    """The module behind ``forward`` in eval mode, back in train mode after if it was."""
    module = module_of(forward)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    yield
    if module is not None and was_training:
        module.train()
