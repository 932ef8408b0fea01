"""Expert-stacked layers: the convs, BNs and cosine classifiers of ``n`` experts held as one layer.

Layout rule (used by every RIDE model here): each tensor of an expert-stacked layer stacks the
experts along dim 0, expert ``e`` owning rows ``[e * k, (e + 1) * k)`` of a conv weight or BN
vector, and activations are expert-major (expert ``e``'s channels are contiguous). A conv over
expert channels is then one grouped conv (``groups = n * groups_per_expert``); a conv that reads
the *shared* features (the first conv of the expert part) is one ordinary conv with ``n * out``
outputs, exactly ``n`` separate convs side by side. BN is per channel, so one BN over ``n * c``
channels is ``n`` separate BNs. With ``num_experts=1`` every layer is the plain layer.

``experts=(start, stop)`` runs only experts ``start..stop-1`` (the input then holds only their
channels); ``None`` runs all of them through the plain module call.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


def float32(x: torch.Tensor):
    """Autocast off for the block, for a classifier head on ``x.float()``: its few FLOPs in
    float32, so logits are not rounded to bf16 (a bf16 logit near 10 moves in steps of 0.06)."""
    if x.device.type not in ("cpu", "cuda"):  # the meta device (FLOP counting) has no autocast
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


class FloatLinear(nn.Linear):
    """``nn.Linear`` computed in float32 under autocast (a classifier head; see ``float32``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with float32(x):
            return super().forward(x.float())


def n_active(experts: tuple[int, int] | None, num_experts: int) -> int:
    """How many experts an ``experts`` range selects."""
    return num_experts if experts is None else experts[1] - experts[0]


class ExpertConv2d(nn.Conv2d):
    """``num_experts`` bias-free convs, stacked along the output channels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        num_experts: int = 1,
        shared_input: bool = False,
    ):
        if shared_input and groups != 1:
            raise ValueError("a conv reading the shared features must have groups=1")
        n_in = in_channels if shared_input else num_experts * in_channels
        n_groups = groups if shared_input else num_experts * groups
        super().__init__(
            n_in,
            num_experts * out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=n_groups,
            bias=False,
        )
        self.num_experts = num_experts
        self.out_per_expert = out_channels
        self.groups_per_expert = groups
        self.shared_input = shared_input

    def forward(self, x: torch.Tensor, experts: tuple[int, int] | None = None) -> torch.Tensor:
        if experts is None:
            return self._conv_forward(x, self.weight, None)
        start, stop = experts
        groups = self.groups_per_expert * (1 if self.shared_input else stop - start)
        weight = self.weight[start * self.out_per_expert : stop * self.out_per_expert]
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, groups)

    def expert_weights(self) -> list[torch.Tensor]:
        """One view per expert of the stacked weight (for init and weight mapping)."""
        return list(self.weight.split(self.out_per_expert, dim=0))


class ExpertBatchNorm2d(nn.BatchNorm2d):
    """``num_experts`` BatchNorm2d over ``channels`` each, stacked (per channel, so exact)."""

    def __init__(self, channels: int, num_experts: int = 1):
        super().__init__(num_experts * channels)
        self.per_expert = channels

    def forward(self, x: torch.Tensor, experts: tuple[int, int] | None = None) -> torch.Tensor:
        if experts is None:
            return super().forward(x)
        lo, hi = experts[0] * self.per_expert, experts[1] * self.per_expert
        use_batch_stats = self.training or not self.track_running_stats
        if self.training and self.track_running_stats and experts[0] == 0:
            self.num_batches_tracked.add_(1)  # once per batch when experts run one by one
        # slices of the running buffers are views: batch_norm updates them in place
        return F.batch_norm(
            x,
            self.running_mean[lo:hi] if self.track_running_stats else None,
            self.running_var[lo:hi] if self.track_running_stats else None,
            self.weight[lo:hi],
            self.bias[lo:hi],
            use_batch_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last if ``x`` is stored that way (and not also plain-contiguous), else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _shortcut_blocks(channels: int, out_per_expert: int, n_experts: int, shared_input: bool):
    """(input channel range, output channel range) pairs: where each expert's input lands."""
    in_per_expert = channels if shared_input else channels // n_experts
    left = (out_per_expert - in_per_expert) // 2
    return [
        ((0 if shared_input else e * in_per_expert, (0 if shared_input else e * in_per_expert) + in_per_expert),
         (e * out_per_expert + left, e * out_per_expert + left + in_per_expert))
        for e in range(n_experts)
    ]


class _OptionAShortcut(torch.autograd.Function):
    """Option-A shortcut whose output *and gradient* keep the input's memory format (a plain
    pad/slice backward returns NCHW gradients, which drags channels_last kernels onto slow
    mixed-stride paths)."""

    @staticmethod
    def forward(ctx, x, out_per_expert: int, n_experts: int, shared_input: bool):
        sub = x[:, :, ::2, ::2]
        batch, channels, height, width = sub.shape
        blocks = _shortcut_blocks(channels, out_per_expert, n_experts, shared_input)
        out = torch.empty(
            (batch, n_experts * out_per_expert, height, width),
            dtype=x.dtype, device=x.device, memory_format=memory_format_of(x),
        ).zero_()
        for (i0, i1), (o0, o1) in blocks:
            out[:, o0:o1] = sub[:, i0:i1]
        ctx.blocks, ctx.shape, ctx.fmt = blocks, x.shape, memory_format_of(x)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_x = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.fmt).zero_()
        target = grad_x[:, :, ::2, ::2]
        for (i0, i1), (o0, o1) in ctx.blocks:
            target[:, i0:i1] += grad[:, o0:o1]
        return grad_x, None, None, None


def option_a_shortcut(
    x: torch.Tensor, out_per_expert: int, n_experts: int, shared_input: bool
) -> torch.Tensor:
    """ResNet "option A" shortcut: stride-2 subsampling, channels zero-padded on both sides
    (``(out - in) // 2`` before, the rest after), for each of ``n_experts`` expert blocks.

    With ``shared_input`` the (shared) input is padded once and repeated for each expert;
    otherwise each expert's channel block is padded on its own.
    """
    return _OptionAShortcut.apply(x, out_per_expert, n_experts, shared_input)


class CosineClassifier(nn.Module):
    """Bias-free "normed linear" classifier: ``scale * cos(feature, class weight)``."""

    def __init__(self, in_features: int, n_classes: int, scale: float = 30.0):
        super().__init__()
        self.in_features, self.n_classes, self.scale = in_features, n_classes, scale
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the LDAM/RIDE init: uniform, then each class vector scaled to unit norm
        with torch.no_grad():
            self.weight.uniform_(-1, 1)
            self.weight.div_(self.weight.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with float32(features):
            return self.scale * F.normalize(features.float(), dim=-1) @ F.normalize(self.weight, dim=-1).T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_classes={self.n_classes}, scale={self.scale}"


class ExpertCosineClassifier(nn.Module):
    """One cosine classifier per expert, applied as one batched matmul: (E, B, F) -> (E, B, C)."""

    def __init__(self, in_features: int, n_classes: int, num_experts: int, scale: float = 30.0):
        super().__init__()
        self.in_features, self.n_classes, self.scale = in_features, n_classes, scale
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.empty(num_experts, n_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.uniform_(-1, 1)
            self.weight.div_(self.weight.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def forward(
        self, features: torch.Tensor, experts: tuple[int, int] | None = None
    ) -> torch.Tensor:
        weight = self.weight if experts is None else self.weight[experts[0] : experts[1]]
        with float32(features):  # as CosineClassifier
            cosine = torch.bmm(F.normalize(features.float(), dim=-1), F.normalize(weight, dim=-1).transpose(1, 2))
        return self.scale * cosine

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, n_classes={self.n_classes}, "
            f"num_experts={self.num_experts}, scale={self.scale}"
        )


def init_weights(model: nn.Module, conv_mode: str = "fan_in") -> None:
    """Kaiming-normal convs (each expert's slice on its own, so fans are per expert),
    Kaiming-normal linear layers, BN weight 1 / bias 0."""
    with torch.no_grad():
        for module in model.modules():
            _init_module(module, conv_mode)


def _init_module(module: nn.Module, conv_mode: str) -> None:
    if isinstance(module, ExpertConv2d):
        for weight in module.expert_weights():
            nn.init.kaiming_normal_(weight, mode=conv_mode, nonlinearity="relu")
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode=conv_mode, nonlinearity="relu")
    elif isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight)
        if module.bias is not None:
            bound = 1 / math.sqrt(module.in_features)
            nn.init.uniform_(module.bias, -bound, bound)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
