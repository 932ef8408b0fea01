"""CUDA graphs for the training step. The replayed step must compute what the eager step
computes; the graph-free checks run everywhere, the numerical comparison needs CUDA (it runs in
experiments/gpu/run.sh on the lent GPU)."""

import pytest
import torch
from conftest import TINY

from bvkit.losses import create_loss
from bvkit.train.graphs import GraphedStep, reason_not_graphable

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_only_sgd_and_epoch_aware_losses_are_graphed():
    p = torch.nn.Parameter(torch.ones(2))
    sgd, adam = torch.optim.SGD([p], lr=0.1), torch.optim.Adam([p])
    counts = [50, 5]
    cuda_device = torch.device("cuda")
    assert reason_not_graphable(create_loss("ldam-drw", counts), sgd, torch.device("cpu")) == "not on CUDA"
    assert "SGD only" in reason_not_graphable(create_loss("ce", counts), adam, cuda_device)
    assert reason_not_graphable(create_loss("ride", counts), sgd, cuda_device) is None

    class EpochLoss(torch.nn.Module):
        def set_epoch(self, epoch):
            self.alpha = 1 - epoch / 10

    assert "graph_key" in reason_not_graphable(EpochLoss(), sgd, cuda_device)


@pytest.mark.parametrize("name", ["ldam-drw", "ride", "ce"])
def test_graph_keys_change_exactly_when_the_loss_computation_does(name):
    loss = create_loss(name, [100, 10, 1])
    keys = []
    for epoch in (0, 159, 160, 199):  # DRW (and RIDE's class-wise temperatures) from epoch 160
        loss.set_epoch(epoch)
        keys.append(loss.graph_key())
    assert keys[0] == keys[1] and keys[2] == keys[3]
    assert (keys[1] != keys[2]) == (name != "ce")


def test_optimizer_state_is_saved_as_the_eager_loop_saves_it():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    step = GraphedStep(torch.nn.Identity(), create_loss("ce", [3, 1, 1]), optimizer, torch.device("cpu"))
    step.lr.fill_(0.05)
    group = step.optimizer_state()["param_groups"][0]
    assert group["lr"] == pytest.approx(0.05) and isinstance(group["lr"], float)
    assert not group["fused"] and torch.is_tensor(optimizer.param_groups[0]["lr"])
    step.restore()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05) and not optimizer.param_groups[0]["fused"]


@cuda
@pytest.mark.parametrize("method", ["ce", "ldam-drw", "ride"])
def test_graphed_training_matches_eager_training_on_cuda(method, tiny_data):
    """Same seed, same batches: the per-epoch losses of graphed and eager runs agree to bf16
    noise, across the DRW switch (epochs=4 scales DRW to epoch 3: a recapture)."""
    from bvkit.train import train

    runs = [train(method, tiny_data, device="cuda", epochs=4, cuda_graphs=graphs, **TINY)
            for graphs in (False, True)]
    eager, graphed = ([row["loss"] for row in run.history] for run in runs)
    assert eager == pytest.approx(graphed, rel=0.05), (eager, graphed)
    assert graphed[2] < graphed[0]  # before DRW (epoch 4 of 4) changes what the loss measures
