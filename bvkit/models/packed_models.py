"""Packed models: ``K`` independent models of one architecture held as one network.

Model ``k`` owns the ``k``-th chunk along dim 0 of every packed conv / BN tensor (the layout
rule of ``bvkit.models.layers``, with models in the role of experts): convs over packed
channels are grouped convs (``groups = K``; RIDE's expert convs ``groups = K * E``), BN is per
channel so one BN over ``K * C`` channels is ``K`` independent BNs, and the classifiers are one
batched matmul. The input is ``(B, K * in_channels, H, W)``: model ``k``'s batch in channels
``[k * in_channels, (k + 1) * in_channels)``. Nothing is shared between models, so each
model's outputs, gradients and BN statistics are exactly those of the model run alone.

Module names equal the single model's, so ``pack_state`` / ``unpack_state`` map tensors by
name: a tensor with one more dim than the single model's is stacked (classifier weights),
otherwise concatenated along dim 0 (``num_batches_tracked``, a scalar, is shared).

    >>> models = [create_model("resnet32", 10) for _ in range(4)]
    >>> packed = pack_models(models)                  # logits (4, B, 10)
    >>> models[2].load_state_dict(unpack_state(packed, 2))
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
    ExpertCosineClassifier,
    float32,
    memory_format_of,
    option_a_shortcut,
)
from bvkit.models.resnet_cifar import BasicBlockA, ResNetCifar, make_stage, make_stages
from bvkit.models.ride import CifarTrunk, RideNet


class PackedLinear(nn.Module):
    """``K`` linear classifiers: features (K, B, F) -> logits (K, B, C), in float32 as ``FloatLinear``."""

    def __init__(self, in_features: int, n_classes: int, num_models: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_models, n_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(num_models, n_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with float32(features):
            return torch.baddbmm(self.bias.unsqueeze(1), features.float(), self.weight.transpose(1, 2))


def packed_stem(in_channels: int, width: int, num_models: int) -> nn.Sequential:
    return nn.Sequential(
        ExpertConv2d(in_channels, width, 3, num_experts=num_models),
        ExpertBatchNorm2d(width, num_models),
        nn.ReLU(inplace=True),
    )


class PackedResNet(nn.Module):
    """``K`` CIFAR ResNets (``ResNetCifar``) side by side; ``forward`` -> logits (K, B, C)."""

    def __init__(self, num_models: int, n_classes: int, width: int, blocks: int, in_channels: int,
                 classifier: str, scale: float):
        super().__init__()
        self.num_models, self.in_channels = num_models, in_channels
        self.stem = packed_stem(in_channels, width, num_models)
        self.stages = make_stages(width, blocks, num_models)
        self.num_features = 4 * width
        if classifier == "cosine":
            self.classifier = ExpertCosineClassifier(self.num_features, n_classes, num_models, scale)
        else:
            self.classifier = PackedLinear(self.num_features, n_classes, num_models)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (K, B, F)."""
        pooled = self.stages(self.stem(x)).mean(dim=(2, 3))
        return pooled.view(pooled.shape[0], self.num_models, self.num_features).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    @staticmethod
    def model_output(output: torch.Tensor, k: int) -> torch.Tensor:
        """Model ``k``'s output in the single model's format."""
        return output[k]


class PackedSharedInputBlock(nn.Module):
    """The first expert block of ``K`` RIDE models: each model's ``E`` experts read that model's
    shared features (a conv with ``groups = K`` and ``E * planes`` outputs per group)."""

    def __init__(self, in_planes: int, planes: int, stride: int, num_models: int, num_experts: int):
        super().__init__()
        self.in_planes, self.planes = in_planes, planes
        self.num_models, self.num_experts = num_models, num_experts
        self.conv1 = ExpertConv2d(in_planes, num_experts * planes, 3, stride, num_experts=num_models)
        self.bn1 = ExpertBatchNorm2d(planes, num_models * num_experts)
        self.conv2 = ExpertConv2d(planes, planes, 3, 1, num_experts=num_models * num_experts)
        self.bn2 = ExpertBatchNorm2d(planes, num_models * num_experts)
        self.subsample = stride != 1 or in_planes != planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        b, _, h, w = x.shape
        repeated = (x.view(b, self.num_models, 1, self.in_planes, h, w)
                    .expand(b, self.num_models, self.num_experts, self.in_planes, h, w)
                    .reshape(b, -1, h, w).contiguous(memory_format=memory_format_of(x)))
        n = self.num_models * self.num_experts
        out += option_a_shortcut(repeated, self.planes, n, False) if self.subsample else repeated
        return F.relu(out, inplace=True)


class PackedRide(nn.Module):
    """``K`` RIDE ResNet-32s (fused ``RideNet`` on a ``CifarTrunk``); ``forward`` -> dict with
    ``logits`` (K, B, C), ``expert_logits`` (K, E, B, C), ``features`` (K, E, B, F)."""

    def __init__(self, num_models: int, n_classes: int, num_experts: int, width: int, blocks: int,
                 in_channels: int, stage2: int, stage3: int, scale: float):
        super().__init__()
        self.num_models, self.num_experts, self.in_channels = num_models, num_experts, in_channels
        self.num_features = stage3
        n = num_models * num_experts
        self.shared = nn.Module()
        self.shared.stem = packed_stem(in_channels, width, num_models)
        self.shared.stage1 = nn.Sequential(*make_stage(width, width, blocks, 1, num_models))
        self.experts = nn.Module()
        self.experts.blocks = nn.ModuleList(
            [PackedSharedInputBlock(width, stage2, 2, num_models, num_experts)]
            + make_stage(stage2, stage2, blocks, 1, n)[1:]
            + make_stage(stage2, stage3, blocks, 2, n)
        )
        self.classifier = ExpertCosineClassifier(stage3, n_classes, n, scale)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.shared.stage1(self.shared.stem(x))
        for block in self.experts.blocks:
            x = block(x)
        pooled = x.mean(dim=(2, 3))
        k, e = self.num_models, self.num_experts
        features = pooled.view(pooled.shape[0], k * e, self.num_features).transpose(0, 1)
        logits = self.classifier(features)
        expert_logits = logits.view(k, e, *logits.shape[1:])
        return {"logits": expert_logits.mean(dim=1), "expert_logits": expert_logits,
                "features": features.view(k, e, *features.shape[1:])}

    @staticmethod
    def model_output(output: dict, k: int) -> dict:
        return {key: value[k] for key, value in output.items()}


def packed_architecture(model: nn.Module, num_models: int) -> nn.Module:
    """An (uninitialised) packed network of ``num_models`` copies of ``model``'s architecture."""
    if num_models < 1:
        raise BvkitError(f"a pack needs at least one model, got {num_models}")
    if isinstance(model, ResNetCifar):
        conv = model.stem[0]
        classifier = model.classifier
        cosine = isinstance(classifier, CosineClassifier)
        if not cosine and not isinstance(classifier, nn.Linear):
            raise BvkitError(f"cannot pack a ResNet with a {type(classifier).__name__} classifier")
        n_classes = classifier.n_classes if cosine else classifier.out_features
        return PackedResNet(num_models, n_classes, conv.out_channels, len(model.stages[0]), conv.in_channels,
                            "cosine" if cosine else "linear", getattr(classifier, "scale", 30.0))
    if isinstance(model, RideNet) and model.fused and isinstance(model.shared, CifarTrunk):
        if model.experts_used is not None:
            raise BvkitError("cannot pack a RIDE model with experts_used set")
        conv = model.shared.stem[0]
        first = model.experts.blocks[0]
        blocks = len(model.shared.stage1)
        if not (isinstance(first, BasicBlockA) and first.shared_input and first.conv1.stride == (2, 2)):
            raise BvkitError("cannot pack this RIDE layout (its first expert block is not a strided shared-input block)")
        stage2 = first.planes
        stage3 = model.num_features
        return PackedRide(num_models, model.n_classes, model.num_experts, conv.out_channels, blocks,
                          conv.in_channels, stage2, stage3, model.classifier.scale)
    raise BvkitError(f"cannot pack a {type(model).__name__} (packable: CIFAR ResNets, fused RIDE ResNet-32)")


def pack_state(packed: nn.Module, states: list[dict], like: dict | None = None) -> dict:
    """The packed state dict holding ``states`` (single-model state dicts, in model order).
    ``like``: other tensors of the packed network's names and shapes to pack instead (e.g. an
    optimiser's momentum buffers, named by their parameters); default its ``state_dict()``."""
    packed_state = packed.state_dict() if like is None else like
    if set(states[0]) != set(packed_state):
        missing = sorted(set(packed_state) ^ set(states[0]))[:3]
        raise BvkitError(f"packed and single models differ in their tensors (e.g. {missing})")
    out = {}
    for key, target in packed_state.items():
        parts = [state[key] for state in states]
        if target.dim() == parts[0].dim() + 1:
            value = torch.stack(parts)
        elif target.dim() == 0:
            value = parts[0].clone()
        else:
            value = torch.cat(parts)
        if value.shape != target.shape:
            raise BvkitError(f"{key}: packed shape {tuple(target.shape)}, got {tuple(value.shape)} from the models")
        out[key] = value
    return out


def unpack_state(packed: nn.Module, k: int, state: dict | None = None) -> dict:
    """Model ``k``'s state dict, as the single model's ``state_dict()`` (cloned tensors).
    ``state``: other tensors named like the packed network's (e.g. an optimiser's momentum
    buffers by parameter name) to unpack instead; default its ``state_dict()``."""
    stacked_classifier = isinstance(packed, PackedResNet)  # (K, C, F): index; RIDE's (K*E, C, F): chunk
    out = {}
    for key, value in (packed.state_dict() if state is None else state).items():
        value = value.detach()
        if value.dim() == 0:
            out[key] = value.clone()
        elif stacked_classifier and key.startswith("classifier."):
            out[key] = value[k].clone()
        else:
            out[key] = value.chunk(packed.num_models)[k].clone()
    return out


def pack_models(models: list[nn.Module]) -> nn.Module:
    """One packed network holding copies of ``models`` (same architecture, any weights)."""
    packed = packed_architecture(models[0], len(models))
    reference = {key: value.shape for key, value in models[0].state_dict().items()}
    for model in models[1:]:
        if {key: value.shape for key, value in model.state_dict().items()} != reference:
            raise BvkitError("models of one pack must share one architecture")
    device = next(models[0].parameters()).device
    packed.load_state_dict(pack_state(packed, [m.state_dict() for m in models]))
    return packed.to(device)


def pack_inputs(batches: list[torch.Tensor]) -> torch.Tensor:
    """K batches (B, C, H, W) -> one packed input (B, K * C, H, W)."""
    return torch.cat(batches, dim=1)
