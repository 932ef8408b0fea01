"""Checkpoints: one ``torch.save`` dict of plain tensors and containers, written atomically.

Everything in it loads with ``torch.load(..., weights_only=True)`` (no pickled classes), so a
checkpoint from an untrusted source cannot run code. The recipe travels as a JSON string. A
run keeps its checkpoint as ``CHECKPOINT`` in its output directory (``docs/formats.md``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from bvkit.atomic import atomic_write
from bvkit.errors import BvkitError

FORMAT = "bvkit-checkpoint-1"
CHECKPOINT = "checkpoint.pt"


def rng_state(device: torch.device | None = None) -> dict:
    """Global torch RNG states (CPU and, where used, CUDA): kept for ops that draw from them."""
    state = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def restore_rng(payload: dict, device: torch.device) -> None:
    """The global RNG states a checkpoint ``payload`` saved, where it has them."""
    if "rng" in payload:
        set_rng_state(payload["rng"], device)


def save_checkpoint(path: str | os.PathLike, **content) -> Path:
    """Write ``content`` (plus the format tag) to ``path`` atomically and durably
    (``bvkit.atomic``): a kill during the write leaves the previous checkpoint intact, never a
    truncated one, and a checkpoint once written survives a power cut (a run resumes from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **content}
    if "recipe" in payload and not isinstance(payload["recipe"], str):
        payload["recipe"] = json.dumps(payload["recipe"], sort_keys=True)
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a bvkit checkpoint safely (``weights_only=True``); the recipe comes back as a dict."""
    path = Path(path)
    if not path.is_file():
        raise BvkitError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt file or one holding pickled objects
        raise BvkitError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BvkitError(f"{path} is not a bvkit checkpoint")
    if isinstance(payload.get("recipe"), str):
        payload["recipe"] = json.loads(payload["recipe"])
    return payload


def load_stage_one(path: str | os.PathLike) -> tuple[dict, dict]:
    """(recipe dict, model state) of a finished stage-one run from a bvkit checkpoint."""
    payload = load_checkpoint(path)
    return payload.get("recipe"), _stage_one_state(payload, path)


def _stage_one_state(payload: dict, path) -> dict:
    if payload.get("stage") != 0 and "stage_one_model" not in payload:
        raise BvkitError(f"{path} holds no stage-one model")
    if payload.get("stage") == 0 and payload.get("epoch") != payload.get("stage_epochs"):
        raise BvkitError(f"{path}: stage one is unfinished (epoch {payload.get('epoch')} of {payload.get('stage_epochs')})")
    return payload["model"] if payload.get("stage") == 0 else payload["stage_one_model"]


STAGE_ONE_KEYS = ("recipe", "dataset", "seed", "num_classes", "in_channels")  # file keys: a checkpoint's format


def keep_stage_one_only(path: str | os.PathLike) -> Path:
    """Rewrite the checkpoint of a finished run as its stage one's model weights alone (no
    optimiser, loss, RNG state or history): what ``load_stage_one`` and a teacher need."""
    payload = load_checkpoint(path)
    state = _stage_one_state(payload, path)
    epochs = payload["stage_epochs"] if payload.get("stage") == 0 else payload["recipe"]["epochs"]
    return save_checkpoint(path, **{key: payload[key] for key in STAGE_ONE_KEYS if key in payload},
                           stage=0, stage_name="stage1", epoch=epochs, stage_epochs=epochs, model=state)


def load_state(model: nn.Module, state: dict, what: str) -> None:
    """``model.load_state_dict(state)``; a state of another shape is bad input, named by ``what``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise BvkitError(f"{what} does not fit the recipe's model: {str(err).splitlines()[0]}") from None
