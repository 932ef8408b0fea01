"""Compute of the CIFAR networks, derived by hand from their architecture (not by walking the
model, as ``bvkit.models.count_flops`` does), for the tests that check the MFLOPs a run reports
(on the import path through the pytest setting ``pythonpath``).

The RIDE paper's convention (``bvkit/models/flops.py``): multiply-accumulates per image; a
k x k convolution from ``c_in`` to ``c_out`` channels on an h x h output map costs
``h*h * c_out * k*k * c_in``, a BatchNorm 2 per output element, a linear layer ``in * out``;
ReLU, pooling and the option-A shortcuts are free.
"""

from __future__ import annotations


def conv3x3(c_in: int, c_out: int, side: int) -> int:
    """A 3x3 convolution and its BatchNorm, on a ``side`` x ``side`` output map."""
    return side * side * c_out * 9 * c_in + 2 * side * side * c_out


def basic_block(c_in: int, c_out: int, side: int) -> int:
    """Two 3x3 convolutions with their BatchNorms; ``side``: the block's output map."""
    return conv3x3(c_in, c_out, side) + conv3x3(c_out, c_out, side)


def resnet32_macs(width: int = 16, blocks: int = 5, classes: int = 100, size: int = 32,
                  in_channels: int = 3) -> int:
    """The CIFAR ResNet (stem, three stages of ``blocks`` blocks at ``width`` x (1, 2, 4)
    channels on maps of ``size`` x (1, 1/2, 1/4), the first block of stages 2 and 3 striding),
    then a linear classifier on ``4 width`` features."""
    total = conv3x3(in_channels, width, size)
    c_in = width
    for stage, factor in enumerate((1, 2, 4)):
        c_out, side = width * factor, size >> stage
        for _ in range(blocks):
            total += basic_block(c_in, c_out, side)
            c_in = c_out
    return total + 4 * width * classes


def bbn_extra_macs(width: int = 16, blocks: int = 5, classes: int = 100, size: int = 32) -> int:
    """BBN over the ResNet: a second copy of the third stage's last block (the striding one
    when it is the stage's only block) and a classifier on twice the features."""
    c_in = 2 * width if blocks == 1 else 4 * width
    return basic_block(c_in, 4 * width, size // 4) + 4 * width * classes


def oltr_extra_macs(width: int = 4, classes: int = 10, size: int = 32) -> int:
    """OLTR over the ResNet: the modulated attention on the last feature map (c = 4 width
    channels, p positions, c / 2 inner channels) and the meta-embedding; its cosine classifier
    costs what the ResNet's linear one did (``classes * c``)."""
    c, p = 4 * width, (size // 4) ** 2
    inner = c // 2
    attention = (3 * p * c * inner + p * inner * c  # theta, phi, g; conv_mask back to c
                 + 2 * p * p * inner  # attention scores and read-out
                 + p * c * p)  # fc_spatial
    meta = 3 * classes * c + c * c  # centroid distances, hallucinator, memory read-out; selector
    return attention + meta
