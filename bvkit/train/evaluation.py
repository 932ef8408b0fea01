"""A trained model's evaluation: test accuracy per shot split, validation accuracy, MFLOPs
per image and, for routed RIDE, expert usage (``docs/formats.md``'s metrics.json columns); the
validation set checked against further unused pool images (``validation_check``, heldout.npz);
a multi-expert model's per-expert test logits; and the test set watched along stage one, for
reporting only (``TestWatch``: history's ``test_accuracy``, snapshots.npz)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bvkit.atomic import atomic_write
from bvkit.data.profiles import ALL, FEW_SHOT, MANY_SHOT, SPLITS, shot_splits, split_accuracy, split_sizes
from bvkit.models import count_flops
from bvkit.train import ddp
from bvkit.train.data import Tensors
from bvkit.train.loop import module_of, predict
from bvkit.train.metrics import expert_usage_by_split, mean_class_accuracy, per_class_accuracy


def evaluate_model(model, routed, data, out: Path | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, test labels, test logits): accuracy per shot split of the training counts,
    validation accuracy, the validation check (``validation_check``; with ``out``, its
    heldout.npz), MFLOPs and, for routed RIDE, expert usage per split."""
    counts = np.asarray(data.counts)
    forward = routed.route if routed is not None else model
    outputs = data.predict(forward, "test")
    logits = outputs["logits"].numpy()
    labels = data.labels("test")
    splits = shot_splits(counts)
    metrics = {
        "accuracy": split_accuracy(logits.argmax(1), labels, counts),
        "split_thresholds": {"many": MANY_SHOT, "few": FEW_SHOT},
        "val_accuracy": validation_record(data, forward)["val_accuracy"],
        "val_check": validation_check(data, forward, out),
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


SNAPSHOTS = "snapshots.npz"
HELDOUT = "heldout.npz"
SNAPSHOT_COUNT = 10  # test-logit snapshots along stage one: every tenth of it (every 20 of 200 epochs)


def experts_forward(model):
    """A batch-first forward of a multi-expert model (one with ``forward_experts``, e.g. RIDE):
    ``{"logits", "expert_logits" (B, M, C)}``; None for a single model."""
    module = module_of(model)
    if module is None or not hasattr(module, "forward_experts"):
        return None

    def forward(x):
        out = module.forward_experts(x)
        return {"logits": out["logits"], "expert_logits": out["expert_logits"].transpose(0, 1)}

    return forward


@torch.no_grad()
def expert_test_logits(model, data) -> np.ndarray | None:
    """(M, N, C) float32 test logits of each expert of a multi-expert ``model`` (all its experts,
    whatever a router would use); None for a single model."""
    forward = experts_forward(model)
    if forward is None:
        return None
    with _eval_mode(model):
        outputs = data.predict(forward, "test")
    return outputs["expert_logits"].numpy().transpose(1, 0, 2).astype(np.float32)


def expert_weights_of(model) -> np.ndarray | None:
    """(M,) float32: the weights a multi-expert ``model`` combines its experts' logits with, its
    ``expert_weights`` buffer (SADE's learned ones); None for a model without one (RIDE's plain
    mean, a single model)."""
    weights = getattr(module_of(model), "expert_weights", None)
    return weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else None


@torch.no_grad()
def validation_check(data, forward, out: Path | None = None) -> dict | None:
    """The validation set against the check images (``bvkit.train.data``: further unused pool
    images drawn like it): mean per-class accuracy of each over the classes both have, their
    difference and its z (per class two independent binomial samples, the pooled accuracy's
    variance under "the same pool"). |z| > 3 says the validation set does not behave like the
    pool it was drawn from. None without check images. With ``out`` the two parts' pool
    indices, labels and logits are written to ``out/heldout.npz``."""
    if data.size("check") == 0 or data.size("val") == 0:
        return None
    n_classes = len(data.class_names)
    parts = {}
    with _eval_mode(forward):
        for name in ("val", "check"):
            parts[name] = (data.labels(name), data.predict(forward, name)["logits"].numpy())
    if out is not None and ddp.is_main():
        arrays = {f"{name}_{key}": value for name, (labels, logits) in parts.items()
                  for key, value in (("labels", labels), ("logits", logits.astype(np.float32)))}
        arrays.update(val_indices=np.asarray(data.val_idx), check_indices=np.asarray(data.check_idx))
        atomic_write(out / HELDOUT, lambda f: np.savez(f, **arrays))
    hits, totals = {}, {}
    for name, (labels, logits) in parts.items():
        hits[name] = np.bincount(labels, weights=(logits.argmax(1) == labels), minlength=n_classes)
        totals[name] = np.bincount(labels, minlength=n_classes).astype(float)
    return check_statistic(hits["val"], totals["val"], hits["check"], totals["check"])


def check_statistic(val_hits, val_totals, check_hits, check_totals) -> dict:
    """``validation_check``'s numbers from per-class hit and sample counts of the two sets."""
    shared = (np.asarray(val_totals) > 0) & (np.asarray(check_totals) > 0)
    vh, vn = np.asarray(val_hits, float)[shared], np.asarray(val_totals, float)[shared]
    ch, cn = np.asarray(check_hits, float)[shared], np.asarray(check_totals, float)[shared]
    val, check = vh / vn, ch / cn
    pooled = (vh + ch) / (vn + cn)
    variance = float(np.sum(pooled * (1 - pooled) * (1 / vn + 1 / cn))) / max(shared.sum(), 1) ** 2
    difference = float(val.mean() - check.mean()) if shared.any() else 0.0
    z = difference / math.sqrt(variance) if variance > 0 else (0.0 if difference == 0 else math.copysign(math.inf, difference))
    return {"val_accuracy": float(val.mean()) if shared.any() else None,
            "check_accuracy": float(check.mean()) if shared.any() else None,
            "difference": difference, "z": z, "classes": int(shared.sum()),
            "n_val": int(vn.sum()), "n_check": int(cn.sum())}


@dataclass
class TestWatch:
    """The test set along stage one, for reporting only: nothing is ever chosen on it (the
    anchors' best-epoch-on-test protocol is shown beside bvkit's last epoch, never used).

    After epoch ``e`` (1-based) of ``epochs``: from ``from_epoch`` on (the first lr drop), the
    mean per-class test accuracy (history's ``test_accuracy``) and each class's (snapshots.npz
    ``class_accuracy``); every ``every`` epochs, the test logits (and a multi-expert model's
    experts') as float16 in ``out/snapshots.npz`` (``snapshot_every``: a tenth of the epochs) (``docs/formats.md``). A resumed run's
    snapshots are kept; an epoch trained again replaces its own."""

    data: object
    model: object
    out: Path | None
    from_epoch: int
    every: int

    def __call__(self, epoch: int) -> dict:
        score = epoch >= self.from_epoch
        snapshot = bool(self.every) and epoch % self.every == 0
        if not (score or snapshot):
            return {}
        forward = experts_forward(self.model) or self.model
        with torch.no_grad(), _eval_mode(self.model):
            outputs = self.data.predict(forward, "test")
        labels = self.data.labels("test")
        by_class = per_class_accuracy(outputs["logits"].argmax(1).numpy(), labels, len(self.data.class_names))
        if self.out is not None and ddp.is_main():
            arrays = {"labels": labels}
            if score:
                arrays.update(accuracy_epochs=np.array([epoch]), class_accuracy=by_class[None].astype(np.float32))
            if snapshot:
                arrays.update(epochs=np.array([epoch]), logits=outputs["logits"].numpy()[None].astype(np.float16))
                if "expert_logits" in outputs:
                    experts = outputs["expert_logits"].numpy().transpose(1, 0, 2)
                    arrays["expert_logits"] = experts[None].astype(np.float16)
            append_snapshot(self.out / SNAPSHOTS, arrays)
        return {"test_accuracy": float(np.nanmean(by_class))} if score else {}


SNAPSHOT_ROWS = {"epochs": ("logits", "expert_logits"), "accuracy_epochs": ("class_accuracy",)}


def append_snapshot(path: Path, arrays: dict) -> None:
    """Add one epoch's arrays to snapshots.npz: ``epochs`` indexes ``logits`` / ``expert_logits``,
    ``accuracy_epochs`` indexes ``class_accuracy`` (``SNAPSHOT_ROWS``); rows stay in epoch order
    and a row of an epoch already there is replaced (an epoch trained again after a resume)."""
    old = dict(np.load(path, allow_pickle=False)) if path.is_file() else {}
    merged = {"labels": arrays["labels"]}
    for index, rows in SNAPSHOT_ROWS.items():
        keep = ~np.isin(old[index], arrays.get(index, [])) if index in old else None
        for key in (index, *rows):
            pieces = ([old[key][keep]] if key in old else []) + ([arrays[key]] if key in arrays else [])
            if pieces:
                merged[key] = np.concatenate(pieces)
        if index in merged:
            order = np.argsort(merged[index], kind="stable")
            for key in (index, *rows):
                if key in merged:
                    merged[key] = merged[key][order]
    atomic_write(path, lambda f: np.savez(f, **merged))


def snapshot_every(epochs: int) -> int:
    """Epochs between two test-logit snapshots: ``SNAPSHOT_COUNT`` of them over ``epochs``."""
    return max(1, int(epochs) // SNAPSHOT_COUNT)


def first_drop_epoch(schedule) -> int:
    """The 1-based epoch from which ``TestWatch`` scores the test set: the last epoch before the
    first lr step (its baseline) on; a schedule without steps (cosine): its last fifth."""
    if schedule.kind == "step" and schedule.milestones:
        return max(int(schedule.milestones[0]), 1)
    return max(schedule.epochs - schedule.epochs // 5, 1)


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
    means = split_accuracy(outputs["logits"].argmax(1).numpy(), labels, data.counts)
    record["val_accuracy"] = means[ALL]
    record.update({f"val_{s}": means[s] for s in SPLITS})
    if "n_experts" in outputs:
        record["val_experts"] = float(outputs["n_experts"].float().mean())
    return record


@torch.no_grad()
def evaluate_accuracy(forward, tensors: Tensors, normalize, device, n_classes: int,
                      precision: str = "fp32") -> float | None:
    """Mean per-class accuracy of ``forward`` on device-resident ``tensors`` (a validation split)."""
    if len(tensors.y) == 0:
        return None
    with _eval_mode(forward):
        logits = predict(forward, tensors.x, normalize, device, precision=precision)["logits"]
    return mean_class_accuracy(logits.argmax(1).numpy(), tensors.y.cpu().numpy(), n_classes)


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
