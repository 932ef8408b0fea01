"""BBN's bilateral-branch ResNet for CIFAR (Zhou et al., CVPR 2020).

A ResNet-32 (``bvkit.models.resnet_cifar``'s blocks) whose stem, first two stages and third
stage up to its last block are shared; the last block of the third stage is duplicated into a
conventional branch and a re-balancing branch, each followed by global average pooling. One
linear classifier reads the two features side by side, weighted by the cumulative-learning
adaptor: ``logits = W 2 [alpha f_c ; (1 - alpha) f_r] + b``. The factor 2 is the official
code's (``mixed_feature = 2 * cat(l * f_a, (1 - l) * f_b)``): inference, where both branches
see the same image and alpha = 0.5, is then ``W [f_c ; f_r] + b``, exactly the official
``valid_model``.
"""

from __future__ import annotations

import torch
from torch import nn

from bvkit.models.layers import FloatLinear, init_weights
from bvkit.models.registry import register_model
from bvkit.models.resnet_cifar import (
    BasicBlockA,
    check_positive,
    cifar_stem,
    make_stages,
)


class BBNResNetCifar(nn.Module):
    """CIFAR ResNet-(6*blocks+2) with BBN's two branches in place of the last block."""

    input_size = 32

    def __init__(self, n_classes: int, width: int = 16, blocks: int = 5, in_channels: int = 3,
                 channels_last: bool = True):
        super().__init__()
        check_positive(width=width, blocks=blocks, in_channels=in_channels)
        widths = (width, 2 * width, 4 * width)
        self.stem = cifar_stem(in_channels, width)
        self.shared = make_stages(width, blocks, last_blocks=blocks - 1)
        self.conventional = _last_block(widths, blocks)
        self.rebalancing = _last_block(widths, blocks)
        self.num_features = widths[2]
        self.classifier = FloatLinear(2 * widths[2], n_classes)
        init_weights(self, conv_mode="fan_in")
        if channels_last:  # as ResNetCifar: faster small-channel convs on CPU, same numbers
            self.to(memory_format=torch.channels_last)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The shared layers' feature maps."""
        return self.shared(self.stem(x))

    def branch_features(self, h: torch.Tensor, branch: nn.Module) -> torch.Tensor:
        return branch(h).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: both branches on the same image, alpha = 0.5 (``W [f_c ; f_r] + b``)."""
        h = self.trunk(x)
        f_c = self.branch_features(h, self.conventional)
        f_r = self.branch_features(h, self.rebalancing)
        return self.classifier(torch.cat((f_c, f_r), dim=1))

    def forward_bilateral(self, x: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
        """Training: ``x`` = (uniform batch ; reversed batch) along dim 0; mixed logits (B, C).

        Each half goes through the shared layers on its own, as in the official code, so
        train-mode BatchNorm never mixes statistics of the two samplers' batches."""
        x_c, x_r = x.chunk(2)
        f_c = self.branch_features(self.trunk(x_c), self.conventional)
        f_r = self.branch_features(self.trunk(x_r), self.rebalancing)
        return self.classifier(2 * torch.cat((alpha * f_c, (1 - alpha) * f_r), dim=1))


def _last_block(widths: tuple[int, int, int], blocks: int) -> BasicBlockA:
    """The third stage's last block; it strides and widens only when it is the stage's only one."""
    alone = blocks == 1
    return BasicBlockA(widths[1] if alone else widths[2], widths[2], 2 if alone else 1)


@register_model("bbn-resnet32", tags=("cifar",))
def bbn_resnet32(n_classes: int, width: int = 16, blocks: int = 5, in_channels: int = 3,
                 channels_last: bool = True) -> BBNResNetCifar:
    """BBN's ResNet-32: shared trunk, conventional and re-balancing last blocks, one classifier."""
    return BBNResNetCifar(n_classes, width, blocks, in_channels, channels_last)
