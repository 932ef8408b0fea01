"""The CIFAR ResNet-34 of the weight-balancing paper (Alshammari et al., CVPR 2022; their
``ResnetEncoder(34)``): torchvision's ResNet-34 layout (BasicBlocks 3 / 4 / 6 / 3 at 64 / 128 /
256 / 512 planes, projection shortcuts) with a CIFAR stem, one 3x3 stride-1 conv to 64 channels,
BN and ReLU, no max-pool; global average pooling and a linear classifier. ``bvkit train
--method weight-balancing --set model=resnet34-cifar ...`` is that paper's published CIFAR form
(``docs/recipes.md``)."""

from __future__ import annotations

import torch
from torch import nn

from bvkit.models.layers import init_weights
from bvkit.models.registry import register_model
from bvkit.models.resnet_cifar import check_positive
from bvkit.models.resnet_imagenet import BasicBlock, ResNetImageNet


class ResNet34Cifar(ResNetImageNet):
    """ResNet-34 with a 3x3 stride-1 stem for 32 x 32 inputs."""

    input_size = 32

    def __init__(self, n_classes: int, in_channels: int = 3, classifier: str = "linear", scale: float = 30.0,
                 channels_last: bool = True):
        check_positive(in_channels=in_channels)
        super().__init__(BasicBlock, (3, 4, 6, 3), n_classes, in_channels=in_channels, classifier=classifier,
                         scale=scale, channels_last=False)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        init_weights(self.stem, conv_mode="fan_out")
        if channels_last:
            self.to(memory_format=torch.channels_last)


@register_model("resnet34-cifar", tags=("cifar",))
def resnet34_cifar(n_classes: int, in_channels: int = 3, classifier: str = "linear", scale: float = 30.0,
                   channels_last: bool = True) -> ResNet34Cifar:
    """CIFAR ResNet-34 (the weight-balancing paper's backbone)."""
    return ResNet34Cifar(n_classes, in_channels, classifier, scale, channels_last)
