"""ImageNet-size ResNets (ResNet-10/50, ResNeXt-50 32x4d) and their RIDE versions.

RIDE: the stem and stages 1-2 are shared; each expert owns stages 3-4, with reduced widths
(192, 384) planes (feature 4 * 384 = 1536) with ``reduce_dimension`` (the default), and a cosine
classifier. As on CIFAR, the experts' stages are expert-stacked (grouped) layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.models.layers import ExpertBatchNorm2d, ExpertConv2d, init_weights, n_active
from bvkit.models.registry import register_model
from bvkit.models.resnet_cifar import check_positive, make_classifier
from bvkit.models.ride import ExpertBranch, RideNet


class Downsample(nn.Module):
    """Projection shortcut: 1x1 conv (strided) + BN."""

    def __init__(self, in_planes, out_planes, stride, num_experts=1, shared_input=False):
        super().__init__()
        self.conv = ExpertConv2d(in_planes, out_planes, 1, stride, 1, num_experts, shared_input)
        self.bn = ExpertBatchNorm2d(out_planes, num_experts)

    def forward(self, x, experts=None):
        return self.bn(self.conv(x, experts), experts)


def projection(in_planes, out_planes, stride, num_experts=1, shared_input=False) -> Downsample | None:
    """The projection shortcut of a block that changes the shape; None: the identity."""
    if stride == 1 and in_planes == out_planes:
        return None
    return Downsample(in_planes, out_planes, stride, num_experts, shared_input)


def _shortcut(block, x, experts):
    if block.downsample is not None:
        return block.downsample(x, experts)
    k = n_active(experts, block.num_experts)
    return x.repeat(1, k, 1, 1) if block.shared_input and k > 1 else x


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, groups=1, base_width=64, num_experts=1,
                 shared_input=False):
        super().__init__()
        self.num_experts, self.shared_input = num_experts, shared_input
        self.conv1 = ExpertConv2d(in_planes, planes, 3, stride, 1, num_experts, shared_input)
        self.bn1 = ExpertBatchNorm2d(planes, num_experts)
        self.conv2 = ExpertConv2d(planes, planes, 3, 1, 1, num_experts)
        self.bn2 = ExpertBatchNorm2d(planes, num_experts)
        self.downsample = projection(in_planes, planes, stride, num_experts, shared_input)

    def forward(self, x, experts=None):
        out = F.relu(self.bn1(self.conv1(x, experts), experts), inplace=True)
        out = self.bn2(self.conv2(out, experts), experts)
        return F.relu(out + _shortcut(self, x, experts), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1, groups=1, base_width=64, num_experts=1,
                 shared_input=False):
        super().__init__()
        self.num_experts, self.shared_input = num_experts, shared_input
        width = int(planes * base_width / 64) * groups
        out_planes = planes * self.expansion
        self.conv1 = ExpertConv2d(in_planes, width, 1, 1, 1, num_experts, shared_input)
        self.bn1 = ExpertBatchNorm2d(width, num_experts)
        self.conv2 = ExpertConv2d(width, width, 3, stride, groups, num_experts)
        self.bn2 = ExpertBatchNorm2d(width, num_experts)
        self.conv3 = ExpertConv2d(width, out_planes, 1, 1, 1, num_experts)
        self.bn3 = ExpertBatchNorm2d(out_planes, num_experts)
        self.downsample = projection(in_planes, out_planes, stride, num_experts, shared_input)

    def forward(self, x, experts=None):
        out = F.relu(self.bn1(self.conv1(x, experts), experts), inplace=True)
        out = F.relu(self.bn2(self.conv2(out, experts), experts), inplace=True)
        out = self.bn3(self.conv3(out, experts), experts)
        return F.relu(out + _shortcut(self, x, experts), inplace=True)


def make_layer(block, in_planes, planes, blocks, stride, groups=1, base_width=64, num_experts=1,
               shared_input=False) -> list[nn.Module]:
    out_planes = planes * block.expansion
    return [
        block(in_planes if i == 0 else out_planes, planes, stride if i == 0 else 1, groups,
              base_width, num_experts, shared_input and i == 0)
        for i in range(blocks)
    ]


def imagenet_stem(in_channels: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


class ResNetImageNet(nn.Module):
    """Plain ImageNet ResNet/ResNeXt (stem, 4 stages at 64/128/256/512 planes, pool, classifier)."""

    input_size = 224

    def __init__(self, block, layers, n_classes, groups=1, base_width=64, in_channels=3,
                 classifier="linear", scale=30.0, channels_last=True):
        super().__init__()
        planes = (64, 128, 256, 512)
        self.stem = imagenet_stem(in_channels)
        stages, in_planes = [], 64
        for i, (p, n) in enumerate(zip(planes, layers)):
            stages.append(nn.Sequential(*make_layer(block, in_planes, p, n, 1 if i == 0 else 2,
                                                    groups, base_width)))
            in_planes = p * block.expansion
        self.stages = nn.Sequential(*stages)
        self.num_features = in_planes
        self.classifier = make_classifier(classifier, in_planes, n_classes, scale)
        init_weights(self, conv_mode="fan_out")
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward_features(self, x):
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x):
        return self.classifier(self.forward_features(x))


class ImageNetTrunk(nn.Module):
    """RIDE's shared part on ImageNet: stem + stages 1-2."""

    input_size = 224

    def __init__(self, block, layers, groups, base_width, in_channels):
        super().__init__()
        self.stem = imagenet_stem(in_channels)
        self.stage1 = nn.Sequential(*make_layer(block, 64, 64, layers[0], 1, groups, base_width))
        self.stage2 = nn.Sequential(*make_layer(block, 64 * block.expansion, 128, layers[1], 2,
                                                groups, base_width))

    def forward(self, x):
        return self.stage2(self.stage1(self.stem(x)))


def ride_resnet_imagenet(block, layers, n_classes, num_experts=3, reduce_dimension=True,
                         scale=30.0, groups=1, base_width=64, in_channels=3, fused=True,
                         expert_mode="auto", channels_last=True) -> RideNet:
    check_positive(num_experts=num_experts, in_channels=in_channels)
    planes3, planes4 = (192, 384) if reduce_dimension else (256, 512)
    shared_out = 128 * block.expansion
    num_features = planes4 * block.expansion

    def make_branch(n: int) -> ExpertBranch:
        blocks = make_layer(block, shared_out, planes3, layers[2], 2, groups, base_width, n, True)
        blocks += make_layer(block, planes3 * block.expansion, planes4, layers[3], 2, groups,
                             base_width, n)
        return ExpertBranch(blocks, n, num_features)

    trunk = ImageNetTrunk(block, layers, groups, base_width, in_channels)
    return RideNet(trunk, make_branch, num_experts, n_classes, num_features, scale, fused,
                   conv_init="fan_out", expert_mode=expert_mode, channels_last=channels_last)


_ARCHS = {
    "resnet10": (BasicBlock, (1, 1, 1, 1), 1, 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 1, 64),
    "resnext50": (Bottleneck, (3, 4, 6, 3), 32, 4),
}


def _plain(arch: str):
    block, layers, groups, base_width = _ARCHS[arch]

    def build(n_classes: int, in_channels: int = 3, classifier: str = "linear",
              scale: float = 30.0, channels_last: bool = True) -> ResNetImageNet:
        return ResNetImageNet(block, layers, n_classes, groups, base_width, in_channels,
                              classifier, scale, channels_last)

    build.__doc__ = f"ImageNet {arch}."
    return build


def _ride(arch: str):
    block, layers, groups, base_width = _ARCHS[arch]

    def build(n_classes: int, num_experts: int = 3, reduce_dimension: bool = True,
              scale: float = 30.0, in_channels: int = 3, fused: bool = True,
              expert_mode: str = "auto", channels_last: bool = True) -> RideNet:
        return ride_resnet_imagenet(block, layers, n_classes, num_experts, reduce_dimension,
                                    scale, groups, base_width, in_channels, fused, expert_mode,
                                    channels_last)

    build.__doc__ = f"RIDE {arch}: shared stem + stages 1-2, per-expert stages 3-4."
    return build


for _arch in _ARCHS:
    _name = "resnext50-32x4d" if _arch == "resnext50" else _arch
    register_model(_name, tags=("imagenet",))(_plain(_arch))
    register_model(f"ride-{_arch}", tags=("imagenet", "ride"))(_ride(_arch))
