"""CUDA graphs for the training step: forward, loss, backward and the SGD update replayed as
one graph per batch instead of several hundred kernel launches from Python.

A CIFAR ResNet-32 step is far too small to keep a modern GPU busy: launched op by op, the GPU
waits on Python. :class:`GraphedStep` captures one whole step on static input buffers and
replays it for every full batch. What changes between steps lives on the device: the batch is
copied into the static buffers, the learning rate is a 0-d tensor read by the fused SGD kernel.
What changes between epochs in Python (DRW switching class weights on, RIDE's temperatures) is
part of the capture key: losses say so through ``graph_key()``, and a new key recaptures. A
batch of another size (the last, smaller one) runs eagerly on the same parameters, gradient
buffers and optimizer state.

Only CUDA, single process (no DDP), SGD, and losses without epoch state or with ``graph_key``
are graphed (``reason_not_graphable``); if capture fails, the phase goes on eagerly.
"""

from __future__ import annotations

import torch

from bvkit.train import ddp
from bvkit.train.devices import autocast, float_outputs

WARMUP_STEPS = 3  # eager steps on a side stream before the first capture (cuDNN/cuBLAS set-up)


def reason_not_graphable(loss, optimizer, device: torch.device) -> str | None:
    """Why a step with ``loss`` and ``optimizer`` cannot be captured on ``device`` (None when it can)."""
    if device.type != "cuda":
        return "not on CUDA"
    if ddp.active():
        return "DDP"
    if type(optimizer) is not torch.optim.SGD:
        return f"optimizer {type(optimizer).__name__} (SGD only)"
    if hasattr(loss, "set_epoch") and not hasattr(loss, "graph_key"):
        return f"loss {type(loss).__name__} changes with the epoch and has no graph_key()"
    return None


def graphed_step(forward, loss, optimizer, device: torch.device, *, enabled: bool = True, name: str = "step",
                 log=None, precision: str = "fp32") -> "GraphedStep | None":
    """A :class:`GraphedStep` where CUDA graphs apply (``reason_not_graphable`` says why not,
    through ``log``), else None for the eager loop. On CUDA it also turns cuDNN's autotuning on:
    the batch shapes are fixed, so each kernel choice is made once."""
    if device.type != "cuda":
        return None
    torch.backends.cudnn.benchmark = True
    if not enabled:
        return None
    reason = reason_not_graphable(loss, optimizer, device)
    if reason is not None:
        if log is not None:
            log(f"{name}: no CUDA graph ({reason})")
        return None
    return GraphedStep(forward, loss, optimizer, device, log=log, precision=precision)


class GraphedStep:
    """``step(inputs, targets, lr) -> (loss, output)``: ``loss(forward(inputs), targets)``,
    its backward and ``optimizer.step()``, replayed from a CUDA graph.

    ``loss`` may return a vector (a packed run's per-model losses): its sum is minimised and the
    vector returned. The forward runs under ``autocast(device, precision)``. The returned tensors are the graph's static outputs: read (or accumulate)
    them before the next call overwrites them.
    """

    def __init__(self, forward, loss, optimizer, device: torch.device, log=None,
                 warmup_steps: int = WARMUP_STEPS, precision: str = "fp32"):
        self.forward, self.loss_fn, self.optimizer = forward, loss, optimizer
        self.device, self.log, self.precision = device, log, precision
        self.warmup_steps = warmup_steps
        self.lr = torch.zeros((), device=device)
        self._saved_groups = [(group["lr"], group.get("fused"), group.get("foreach")) for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:  # fused SGD reads a tensor lr on the device
            group["lr"], group["fused"], group["foreach"] = self.lr, True, False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key = None
        self.batch_shape = None
        self.warm = 0
        self.disabled = False

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float):
        self.lr.fill_(lr)
        if self.batch_shape is None:
            self.batch_shape = inputs.shape
        if self.disabled or inputs.shape != self.batch_shape:
            return self._eager(inputs, targets)
        key = self._loss_key()
        if self.graph is not None and key == self.key:
            self.static_inputs.copy_(inputs)
            self.static_targets.copy_(targets)
            self.graph.replay()
            return self.static_loss, self.static_output
        if self.graph is not None:  # the loss changed mode (e.g. DRW): warm up again, recapture
            self.graph, self.warm = None, self.warmup_steps - 1
        if self.warm < self.warmup_steps:
            self.warm += 1
            return self._eager(inputs, targets, side_stream=True)
        return self._capture(inputs, targets, key)

    def restore(self) -> None:
        """Give the optimizer back its float learning rate and its own SGD implementation."""
        for group, (lr, fused, foreach) in zip(self.optimizer.param_groups, self._saved_groups):
            group["lr"], group["fused"], group["foreach"] = float(self.lr), fused, foreach

    def optimizer_state(self) -> dict:
        """``optimizer.state_dict()`` as the eager loop would save it (float lr, no fused flag)."""
        state = self.optimizer.state_dict()
        for group, (_, fused, foreach) in zip(state["param_groups"], self._saved_groups):
            group["lr"], group["fused"], group["foreach"] = float(self.lr), fused, foreach
        return state

    # ------------------------------------------------------------------------------------------

    def _loss_key(self):
        key = getattr(self.loss_fn, "graph_key", None)
        return key() if key is not None else None

    def _forward_loss(self, inputs, targets):
        with autocast(self.device, self.precision, cache_enabled=False):  # no weight-cast cache may outlive a capture
            output = self.forward(inputs)
        return self.loss_fn(float_outputs(output), targets), output

    def _eager(self, inputs, targets, side_stream: bool = False):
        stream = torch.cuda.Stream(self.device) if side_stream else torch.cuda.current_stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            loss, output = self._forward_loss(inputs, targets)
            self.optimizer.zero_grad(set_to_none=False)  # keeps a captured graph's gradient buffers
            loss.sum().backward()
            self.optimizer.step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return loss.detach(), _detached(output)  # no reference may keep this step's autograd graph alive

    def _capture(self, inputs, targets, key):
        self.static_inputs = inputs.clone()
        self.static_targets = targets.clone()
        self.optimizer.zero_grad(set_to_none=True)  # gradients allocated inside the graph: written, not accumulated
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                loss, output = self._forward_loss(self.static_inputs, self.static_targets)
                loss.sum().backward()
                self.optimizer.step()
        except Exception as err:  # an op that syncs with the host, say: train this phase eagerly
            self.disabled = True
            self.optimizer.zero_grad(set_to_none=True)
            if self.log is not None:
                self.log(f"CUDA graph capture failed ({type(err).__name__}: {str(err).splitlines()[0]}); "
                         "training eagerly")
            return self._eager(inputs, targets)
        self.graph, self.key = graph, key
        self.static_loss, self.static_output = loss.detach(), _detached(output)
        graph.replay()
        return self.static_loss, self.static_output


def _detached(output):
    if torch.is_tensor(output):
        return output.detach()
    return {key: value.detach() if torch.is_tensor(value) else value for key, value in output.items()}
