"""CIFAR ResNets (He et al. 2016, the LDAM/RIDE variant): BasicBlocks with option-A shortcuts.

ResNet-32 = stem (3x3 conv to 16 channels) + 3 stages of 5 BasicBlocks at 16/32/64 channels,
global average pooling, then a linear or cosine ("normed linear", LDAM) classifier.
``width`` and ``blocks`` shrink it for tests and demos; ``in_channels=1`` for Fashion-MNIST.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.models.layers import (
    CosineClassifier,
    ExpertBatchNorm2d,
    ExpertConv2d,
    FloatLinear,
    init_weights,
    n_active,
    option_a_shortcut,
)
from bvkit.models.registry import register_model


class BasicBlockA(nn.Module):
    """3x3-3x3 residual block with an option-A (parameter-free) shortcut, for ``num_experts``
    experts at once; ``shared_input``: the input is the experts' common (shared) features."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        num_experts: int = 1,
        shared_input: bool = False,
    ):
        super().__init__()
        self.planes, self.num_experts, self.shared_input = planes, num_experts, shared_input
        self.conv1 = ExpertConv2d(in_planes, planes, 3, stride, 1, num_experts, shared_input)
        self.bn1 = ExpertBatchNorm2d(planes, num_experts)
        self.conv2 = ExpertConv2d(planes, planes, 3, 1, 1, num_experts)
        self.bn2 = ExpertBatchNorm2d(planes, num_experts)
        self.subsample = stride != 1 or in_planes != planes

    def forward(self, x: torch.Tensor, experts: tuple[int, int] | None = None) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x, experts), experts), inplace=True)
        out = self.bn2(self.conv2(out, experts), experts)
        k = n_active(experts, self.num_experts)
        if self.subsample:
            out += option_a_shortcut(x, self.planes, k, self.shared_input)
        elif self.shared_input and k > 1:
            out += x.repeat(1, k, 1, 1)
        else:
            out += x
        return F.relu(out, inplace=True)


def make_stage(
    in_planes: int,
    planes: int,
    blocks: int,
    stride: int,
    num_experts: int = 1,
    shared_input: bool = False,
) -> list[nn.Module]:
    """``blocks`` BasicBlockA, the first one striding (and reading the shared input)."""
    return [
        BasicBlockA(
            in_planes if i == 0 else planes,
            planes,
            stride if i == 0 else 1,
            num_experts,
            shared_input and i == 0,
        )
        for i in range(blocks)
    ]


def make_stages(width: int, blocks: int, num_experts: int = 1,
                last_blocks: int | None = None) -> nn.Sequential:
    """The three stages at ``width * (1, 2, 4)`` channels, the last with ``last_blocks``
    blocks (default ``blocks``; BBN keeps its last block apart)."""
    widths = (width, 2 * width, 4 * width)
    last_blocks = blocks if last_blocks is None else last_blocks
    return nn.Sequential(
        nn.Sequential(*make_stage(width, widths[0], blocks, 1, num_experts)),
        nn.Sequential(*make_stage(widths[0], widths[1], blocks, 2, num_experts)),
        nn.Sequential(*make_stage(widths[1], widths[2], last_blocks, 2, num_experts)),
    )


def cifar_stem(in_channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


def make_classifier(kind: str, in_features: int, n_classes: int, scale: float) -> nn.Module:
    if kind == "linear":
        return FloatLinear(in_features, n_classes)
    if kind == "cosine":
        return CosineClassifier(in_features, n_classes, scale)
    raise BvkitError(f"unknown classifier {kind!r} (expected 'linear' or 'cosine')")


def check_positive(**values: int) -> None:
    for key, value in values.items():
        if int(value) < 1:
            raise BvkitError(f"{key} must be >= 1, got {value}")


class ResNetCifar(nn.Module):
    """CIFAR ResNet-(6*blocks+2) with stage widths ``width * (1, 2, 4)``."""

    input_size = 32

    def __init__(
        self,
        n_classes: int,
        width: int = 16,
        blocks: int = 5,
        in_channels: int = 3,
        classifier: str = "linear",
        scale: float = 30.0,
        channels_last: bool = True,
    ):
        super().__init__()
        check_positive(width=width, blocks=blocks, in_channels=in_channels)
        self.stem = cifar_stem(in_channels, width)
        self.stages = make_stages(width, blocks)
        self.num_features = 4 * width
        self.classifier = make_classifier(classifier, self.num_features, n_classes, scale)
        init_weights(self, conv_mode="fan_in")
        if channels_last:  # much faster on CPU for these small-channel convs; same numbers
            self.to(memory_format=torch.channels_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def _resnet_cifar(depth: int):
    def build(n_classes: int, width: int = 16, blocks: int = (depth - 2) // 6,
              in_channels: int = 3, classifier: str = "linear", scale: float = 30.0,
              channels_last: bool = True) -> ResNetCifar:
        return ResNetCifar(n_classes, width, blocks, in_channels, classifier, scale, channels_last)

    build.__doc__ = f"CIFAR ResNet-{depth} (``blocks`` per stage overrides the depth)."
    return build


for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}", tags=("cifar",))(_resnet_cifar(_depth))


@register_model("resnet32-ldam", tags=("cifar",))
def resnet32_ldam(n_classes: int, width: int = 16, blocks: int = 5, in_channels: int = 3,
                  scale: float = 30.0, channels_last: bool = True) -> ResNetCifar:
    """ResNet-32 with the cosine classifier the LDAM paper uses (logits = 30 * cosine)."""
    return ResNetCifar(n_classes, width, blocks, in_channels, "cosine", scale, channels_last)
