"""Torch DDP for ``torchrun``: every rank walks the same global batch order and trains on its
slice of each batch, so the averaged gradient equals the single-process full-batch gradient
(for losses that are batch means and models without train-mode BN coupling across the batch;
BatchNorm statistics are per rank unless the model is converted with ``sync_batchnorm``).

    torchrun --nproc_per_node 4 -m bvkit.train --dataset cifar100-lt --method ride --out runs/r

Each rank trains on the GPU that ``LOCAL_RANK`` names (``bvkit.train.devices.resolve_device``).
Rank 0 writes checkpoints and outputs. Second stages (cRT, LWS, routers: small heads on frozen
features) are not sharded: every rank takes the whole batch and makes the same update.

File-list datasets (ImageNet-LT, iNat) are not held on the device: their training loader draws
the same global batches on every rank and each rank loads only its slice
(``bvkit.data.EpochBatchSampler``); evaluation is split over the ranks and gathered
(``gather``), with rank 0's BatchNorm statistics (``broadcast_buffers``).
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist
from torch import nn


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False when run alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return active()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def shard(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    chunks = torch.arange(len(targets), device=targets.device).tensor_split(world_size())[rank()]
    return inputs[chunks], targets[chunks]


def wrap(model: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
    """DDP-wrap ``model`` when a process group is active; otherwise return it unchanged."""
    if not active():
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sum_over_ranks(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int):
    """Epoch totals summed over ranks (one all-reduce per epoch, for logging)."""
    totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=loss_sum.device)])
    dist.all_reduce(totals)
    return totals[0], totals[1], int(totals[2].item())


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE), 1 when run alone."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if active() else 1


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: under DDP each rank's
    statistics also saw its own last slice, so a split evaluation would mix them."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def gather(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every rank's CPU tensors concatenated along dim 0 in rank order, on every rank."""
    if not active():
        return parts
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, parts)
    filled = [part for part in gathered if part]  # a rank with no items sends {}
    return {key: torch.cat([part[key] for part in filled]) for key in (filled[0] if filled else {})}


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group on every rank (call it on all ranks, after the last collective).

    The barrier keeps a rank from tearing gloo down while a peer still talks to it. Then the
    main thread lets go of the GIL for a moment: gloo's worker threads destroy finished work
    objects whose thread-local state holds Python references, and a worker that needs the GIL
    once the interpreter is finalizing aborts the process ("terminate called without an active
    exception", pytorch/pytorch#179291; 6 of about 280 two-process test runs here).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    barrier()
    dist.destroy_process_group()
    time.sleep(_GIL_RELEASE_S)


_GIL_RELEASE_S = 0.2
