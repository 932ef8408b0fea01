"""CUDA graphs for the training step. The replayed step must compute what the eager step
computes; the graph-free checks run everywhere, and so does GraphedStep's own bookkeeping
(warm-up, capture key, which epochs recapture, the eager last batch) with the three CUDA-only
operations stood in for on the CPU (``CpuGraphedStep``). The numerical comparison with real
graphs needs CUDA (it runs in experiments/gpu/run.sh on the lent GPU)."""

import numpy as np
import pytest
import torch
from train_helpers import TINY

from bvkit.losses import create_loss
from bvkit.train import loop
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
    noise, across the DRW switch (epochs=4 scales DRW to epoch 3: a recapture).

    NOT YET SEEN TO PASS ON A GPU. The one GPU session (H100, 2026-11-27,
    experiments/results/gpu_h100_2026-11-27/pytest_cuda.txt) passed the rel=0.05 comparison for
    all three methods but failed ldam-drw on the then second assertion, ``graphed[-1] <
    graphed[0]`` (DRW re-weights the last epoch's loss upwards). It was relaxed to the epochs
    before DRW, ``graphed[2] < graphed[0]``, which has not run on a GPU since: treat this test
    as unverified until a GPU session passes it, then say so here."""
    from bvkit.train import train

    runs = [train(method, tiny_data, device="cuda", epochs=4, cuda_graphs=graphs, **TINY)
            for graphs in (False, True)]
    eager, graphed = ([row["loss"] for row in run.history] for run in runs)
    assert eager == pytest.approx(graphed, rel=0.05), (eager, graphed)
    assert graphed[2] < graphed[0]  # before DRW (epoch 4 of 4) changes what the loss measures


# ------------------------------------------------ GraphedStep's bookkeeping, on the CPU


class CpuGraphedStep(GraphedStep):
    """GraphedStep with its CUDA-only parts stood in for on the CPU, everything else its own:
    an eager step (on a side stream for a warm-up) runs on the CPU; a capture runs the step once
    (as the capture and the replay that follows it do) on static copies of the batch; a replay
    runs it again on the static buffers, written in place. ``events`` records which was which."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events = []

    def _step(self, inputs, targets):
        loss, output = self._forward_loss(inputs, targets)
        self.optimizer.zero_grad(set_to_none=False)
        loss.sum().backward()
        self.optimizer.step()
        return loss.detach(), {k: v.detach() for k, v in output.items()} if isinstance(output, dict) else output.detach()

    def _eager(self, inputs, targets, side_stream=False):
        self.events.append("warm-up" if side_stream else "eager")
        return self._step(inputs, targets)

    def _capture(self, inputs, targets, key):
        self.events.append(("capture", key))
        self.static_inputs, self.static_targets = inputs.clone(), targets.clone()
        self.graph, self.key = self, key  # replay() below
        self.static_loss, self.static_output = self._step(self.static_inputs, self.static_targets)
        return self.static_loss, self.static_output

    def replay(self):
        self.events.append("replay")
        loss, output = self._step(self.static_inputs, self.static_targets)
        self.static_loss.copy_(loss)
        for static, new in ((self.static_output, output),) if torch.is_tensor(output) else (
                (self.static_output[k], v) for k, v in output.items() if torch.is_tensor(v)):
            static.copy_(new)


def captures(events):
    return [event[1] for event in events if isinstance(event, tuple)]


@pytest.mark.parametrize("name, recaptures", [("ce", False), ("ldam-drw", True), ("ride", True)])
def test_a_drw_switch_recaptures_and_an_lr_step_does_not(name, recaptures):
    """Epoch by epoch as the training loop calls it: full batches warm up (3 eager steps), are
    captured once and replayed; the last, smaller batch runs eagerly and keeps the graph; a new
    learning rate is written into the step's lr tensor, no recapture; the DRW switch (and RIDE's
    class-wise temperatures) changes the loss's graph key: one more warm-up step, a recapture.
    The parameters end where plain eager SGD on the same batches takes them."""
    torch.manual_seed(0)
    counts = [50, 10, 2]
    model, eager_model = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    eager_model.load_state_dict(model.state_dict())

    def two_experts(net):  # RIDE's loss reads the experts' logits
        return lambda x: {"expert_logits": torch.stack([net(x), 0.5 * net(x)])}

    forward, eager_forward = (two_experts(model), two_experts(eager_model)) if name == "ride" else (model, eager_model)
    loss, eager_loss = create_loss(name, counts), create_loss(name, counts)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    eager_optimizer = torch.optim.SGD(eager_model.parameters(), lr=0.1, momentum=0.9)
    step = CpuGraphedStep(forward, loss, optimizer, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    schedule = [(0, 0.1, 5), (1, 0.01, 2), (160, 0.01, 3), (161, 0.001, 2)]  # (epoch, lr, full batches)
    seen = []
    for epoch, lr, batches in schedule:
        loss.set_epoch(epoch)
        eager_loss.set_epoch(epoch)
        for size in [8] * batches + [3]:
            x, y = torch.randn(size, 4, generator=gen), torch.randint(0, 3, (size,), generator=gen)
            got, _ = step(x, y, lr)
            assert step.lr.item() == pytest.approx(lr) and optimizer.param_groups[0]["lr"] is step.lr
            for group in eager_optimizer.param_groups:
                group["lr"] = lr
            eager_optimizer.zero_grad()
            want = eager_loss(eager_forward(x), y)
            want.backward()
            eager_optimizer.step()
            torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
        seen.append(step.events[:])
        step.events.clear()
    keys = [captures(events) for events in seen]
    assert seen[0] == ["warm-up"] * 3 + [("capture", *keys[0])] + ["replay", "eager"]
    assert seen[1] == ["replay", "replay", "eager"]  # lr 0.1 -> 0.01: the same graph
    if recaptures:  # DRW on: another key, one more warm-up step, a new capture
        assert seen[2] == ["warm-up", ("capture", *keys[2]), "replay", "eager"] and keys[2] != keys[0]
    else:
        assert seen[2] == ["replay"] * 3 + ["eager"]
    assert seen[3] == ["replay", "replay", "eager"]  # lr 0.01 -> 0.001
    for a, b in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    step.restore()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001) and not optimizer.param_groups[0]["fused"]


@pytest.mark.parametrize("method", ["ce", "ldam-drw"])
def test_the_training_loop_drives_the_graphed_step_as_it_should(method, tiny_data, monkeypatch):
    """A real run through the training loop with ``CpuGraphedStep`` where CUDA would graph:
    one capture per phase, one more at the DRW switch (epochs=4: epoch 3), none for the
    learning-rate schedule's steps, and the run's losses and predictions those of the eager run."""
    from bvkit.train import train

    steps = []

    def graphed_step(forward, loss, optimizer, device, *, enabled=True, name="step", log=None, **kwargs):
        if not enabled or reason_not_graphable(loss, optimizer, torch.device("cuda")) is not None:
            return None
        steps.append(CpuGraphedStep(forward, loss, optimizer, device, log=log, **kwargs))
        return steps[-1]

    monkeypatch.setattr(loop, "graphed_step", graphed_step)
    settings = {"device": "cpu", "epochs": 4, "precision": "fp32", "seed": 2, **TINY}
    eager = train(method, tiny_data, cuda_graphs=False, **settings)
    assert not steps
    graphed = train(method, tiny_data, cuda_graphs=True, **settings)
    assert len(steps) == 1
    # ~250 images in batches of 64: 3 full batches and a smaller last one per epoch
    events, keys = steps[0].events, captures(steps[0].events)
    epoch_one = ["warm-up"] * 3 + ["eager"]
    epoch_two = [("capture", keys[0]), "replay", "replay", "eager"]
    epoch_three = ["replay"] * 3 + ["eager"]
    epoch_four = ["warm-up", ("capture", keys[-1]), "replay", "eager"] if method == "ldam-drw" else epoch_three
    assert events == epoch_one + epoch_two + epoch_three + epoch_four, events
    assert len(set(keys)) == len(keys)  # ldam-drw: DRW off, then on
    assert len({row["lr"] for row in graphed.history}) > 1  # the lr moved without a recapture
    # fused SGD with a tensor lr (the graphed step's) and the eager SGD round differently: 1e-3
    assert [row["loss"] for row in graphed.history] == pytest.approx([row["loss"] for row in eager.history], rel=1e-3)
    np.testing.assert_allclose(graphed.logits, eager.logits, rtol=1e-2, atol=1e-2 * np.abs(eager.logits).max())
    assert (graphed.logits.argmax(1) == eager.logits.argmax(1)).mean() > 0.99
