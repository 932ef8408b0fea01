"""A run's output directory (``docs/formats.md``): metrics.json, predictions.npz, history.csv
and checkpoint.pt, and resuming from that checkpoint.

``finish_run`` evaluates a trained model and writes the run's files, for a single run and for
each run of a pack alike; ``run_metrics`` is the one builder of metrics.json. ``run_key`` and
``checkpoint_keys`` are what a run's checkpoints say about the run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bvkit.errors import BvkitError
from bvkit.predictions import save_predictions
from bvkit.train import ddp
from bvkit.train.checkpoint import CHECKPOINT, load_checkpoint, load_state, rng_state, save_checkpoint
from bvkit.train.data import imbalance_of
from bvkit.train.evaluation import evaluate_model, expert_test_logits, expert_weights_of
from bvkit.train.progress import clear_progress


def finish_run(ctx, recipe, model, routed, data, *, imbalance: float, epochs: int | None, extra: dict,
               started: float, pack_size: int | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Evaluate the trained ``model`` (``routed``: RIDE's routed model, if any) on ``data`` and
    write the run's files under ``ctx.out`` (a ``LoopContext``; on the main rank): (metrics,
    test labels, test logits). ``started``: the ``time.perf_counter()`` the run's ``seconds``
    count from; ``pack_size``: the run trained in a pack of that many (its epochs' seconds
    are the pack's, shared among its runs; metrics.json says ``pack_size``)."""
    model.eval()
    evaluated, labels, logits = evaluate_model(model, routed, data, ctx.out)
    expert_logits = expert_test_logits(model, data)
    extra = {"schedule_scaling": recipe.schedule_scaling, **extra}  # how its milestones were moved
    metrics = run_metrics(recipe.name, data, imbalance, ctx.seed, epochs, evaluated, extra=extra,
                          seconds=time.perf_counter() - started,  # this call (a resumed run: since resuming)
                          train_seconds=sum(row.get("seconds", 0.0) for row in ctx.history) / (pack_size or 1),
                          device=ctx.device, train_accuracy=final_train_accuracy(ctx.history, recipe))
    if pack_size is not None:
        metrics["pack_size"] = pack_size
    if ctx.out is not None and ddp.is_main():
        write_outputs(ctx.out, metrics, labels, logits, np.asarray(data.counts), data.class_names, ctx.history,
                      expert_logits=expert_logits, expert_weights=expert_weights_of(model))
    return metrics, labels, logits


def run_metrics(method: str, data, imbalance: float, seed: int, epochs: int | None, evaluated: dict, *,
                extra: dict, seconds: float, train_seconds: float, device: torch.device,
                train_accuracy: float | None = None) -> dict:
    """metrics.json of a run: what ran, ``evaluated`` (``evaluate_model``'s metrics), its
    ``final_train_accuracy``, the sizes of its parts, ``extra`` (a procedure's or stage's own
    keys), its time and device. ``seconds``: this call's wall clock; ``train_seconds``: the
    epochs' (a resumed run's all)."""
    return {
        "method": method,
        "dataset": data.name,
        "imbalance": imbalance_of(data, imbalance),
        "seed": seed,
        "epochs": epochs,
        **evaluated,
        "train_accuracy": train_accuracy,
        "n_train": data.size("train"),
        "n_val": data.size("val"),
        **extra,
        "mflops": evaluated["mflops"],
        "seconds": round(seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "device": str(device),
    }


def final_train_accuracy(history: list[dict], recipe) -> float | None:
    """The run's final training accuracy: the last epoch's running accuracy of the recipe's last
    stage (stage one when it has none); None when that stage trains no epoch (tau-norm) or
    counts no accuracy (RIDE's routers)."""
    last_stage = recipe.stages[-1].kind if recipe.stages else None
    if not history or (last_stage is not None and history[-1]["stage"] != last_stage):
        return None
    return history[-1]["accuracy"]


def write_outputs(out: Path, metrics: dict, labels, logits, counts, class_names, history,
                  expert_logits=None, expert_weights=None) -> None:
    """metrics.json, predictions.npz (one prediction set; a multi-expert model's (M, N, C)
    ``expert_logits`` as its (1, M, N, C), the (M,) ``expert_weights`` it combines them with,
    if any, as (1, M)) and history.csv under ``out``."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_predictions(out / "predictions.npz", labels=np.asarray(labels, dtype=np.int64),
                     logits=np.asarray(logits[None], dtype=np.float32),
                     train_counts=np.asarray(counts, dtype=np.int64), class_names=class_names,
                     expert_logits=None if expert_logits is None else np.asarray(expert_logits, np.float32)[None],
                     expert_weights=None if expert_weights is None else np.asarray(expert_weights, np.float32)[None])
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    clear_progress(out)  # the run is no longer in progress


def save_final_checkpoint(out: Path, model, *, stage: int, stage_name: str, epoch: int, history: list,
                          device: torch.device, **extra) -> None:
    """checkpoint.pt of a model no epoch loop saved last (a tau-norm stage, a post-hoc one):
    no optimiser or loss state to resume."""
    save_checkpoint(out / CHECKPOINT, stage=stage, stage_name=stage_name, epoch=epoch, model=model.state_dict(),
                    optimizer={}, loss={}, rng=rng_state(device), history=json.dumps(history), **extra)


def run_key(recipe, data, seed: int) -> dict:
    """What makes a checkpoint this run's: its recipe, dataset, seed and training counts."""
    return {"recipe": recipe.to_dict(), "dataset": data.name, "seed": seed,
            "counts": np.asarray(data.train_counts).tolist()}


def checkpoint_keys(recipe, data, seed: int) -> dict:
    """What every checkpoint of a run carries beside its phase's state (``LoopContext.checkpoint_keys``):
    the recipe, dataset, seed, the model's classes and input channels, and the ``run_key``."""
    return {"recipe": recipe.to_dict(), "dataset": data.name, "seed": seed,
            "num_classes": len(data.class_names), "in_channels": data.in_channels,
            "run_key": json.dumps(run_key(recipe, data, seed), sort_keys=True)}


def resume_payload(out: Path | None, run_key: dict) -> dict | None:
    """The checkpoint under ``out`` to resume, None when there is none; one of another run
    (``run_key``: recipe, dataset, seed, training counts) is refused."""
    if out is None or not (out / CHECKPOINT).is_file():
        return None
    payload = load_checkpoint(out / CHECKPOINT)
    if json.loads(payload.get("run_key", "{}")) != json.loads(json.dumps(run_key, sort_keys=True)):
        raise BvkitError(f"{out} holds a checkpoint of a different run; use another --out or --no-resume")
    return payload


def resume_phase(phase, payload: dict | None) -> int:
    """The epoch ``phase`` starts from: 0, or, when ``payload`` was saved in this phase, its
    epoch, with the model, optimiser and loss state it saved restored."""
    if payload is None or payload.get("stage") != phase.index:
        return 0
    load_state(phase.model, payload["model"], "checkpoint model")
    if payload.get("optimizer"):
        phase.optimizer.load_state_dict(payload["optimizer"])
    if payload.get("loss"):
        phase.loss.load_state_dict(payload["loss"])
    return int(payload["epoch"])
