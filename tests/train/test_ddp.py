"""DDP with two CPU processes (gloo) averages to the single-process full-batch gradient.

The model has no BatchNorm: train-mode BN normalises with per-rank batch statistics, so only
BN-free models (or BN in eval mode, or SyncBatchNorm) give the full-batch gradient exactly.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bvkit.train import ddp


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5))


def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 8, 8, generator=generator), torch.randint(0, 5, (8,), generator=generator)


def gradients(model: nn.Module) -> dict:
    return {name: p.grad.detach().clone() for name, p in ddp.unwrap(model).named_parameters()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = ddp.wrap(tiny_model())
        x, y = ddp.shard(*batch())
        assert len(y) == 4
        nn.functional.cross_entropy(model(x), y).backward()
        if rank == 0:
            torch.save(gradients(model), out)
    finally:
        ddp.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_gradient_matches_single_process(tmp_path):
    model = tiny_model()
    x, y = batch()
    nn.functional.cross_entropy(model(x), y).backward()
    expected = gradients(model)

    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)


def test_without_a_process_group_ddp_helpers_are_identities():
    model = tiny_model()
    x, y = batch()
    assert ddp.wrap(model) is model and ddp.world_size() == 1 and ddp.is_main()
    sx, sy = ddp.shard(x, y)
    assert torch.equal(sx, x) and torch.equal(sy, y)
