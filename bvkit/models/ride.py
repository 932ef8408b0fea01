"""RIDE (Wang et al. 2021): a shared trunk, ``n`` experts with their own late stages and cosine
classifiers; the model's output is the mean of the experts' logits.

Weights: by default (``fused=True``) the experts' layers are expert-stacked
(``bvkit.models.layers``): expert ``e``'s tensors are the ``e``-th chunk along dim 0 of each
stacked conv/BN tensor, and the classifiers are one (E, C, F) tensor used in one batched
matmul. ``fused=False`` keeps ``n`` separate branches (the reference code's layout);
``separate_state_dict`` / ``fused_state_dict`` convert between the two.

Execution of a fused model (``expert_mode``, same weights and numbers either way):
``"grouped"`` runs every layer of all experts as one grouped conv / one BN;
``"split"`` runs the experts one after the other on their own tensors through slices of the
stacked weights. oneDNN's grouped convs at 24 or 48 channels per group are slower than separate
convs on CPU in float32 (forward + backward of the 24-channel layer at batch 128: 28 against
21 ms on two threads, ``experiments/bench_expert_convs.py``), not in bf16 (18.4 against 18.1 ms
on one thread); on a GPU "grouped" launches one kernel per layer instead of n.
``"auto"`` (default) picks "split" on CPU in float32 and "grouped" in bf16 (autocast) and on a
GPU (``experiments/bench_step.py``, two threads: in float32 the RIDE-3 step at 0.78x against
0.68x the reference; in bf16 grouped 1.10x against split 1.01x, and on a busy machine, where each
of split's 2.3 times as many ops may wait for a descheduled thread, split took 8 times as long).
Models are built channels_last by default: on CPU that is much faster for these small-channel
convs (inputs may stay NCHW; outputs are the same).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.models.layers import ExpertCosineClassifier, init_weights
from bvkit.models.registry import register_model
from bvkit.models.resnet_cifar import check_positive, cifar_stem, make_stage

EXPERT_MODES = ("auto", "grouped", "split")


class ExpertBranch(nn.Module):
    """The experts' own stages (expert-stacked blocks) and global average pooling."""

    def __init__(self, blocks: list[nn.Module], num_experts: int, num_features: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.num_experts, self.num_features = num_experts, num_features

    def forward(
        self,
        shared: torch.Tensor,
        experts: tuple[int, int] | None = None,
        split: bool = False,
    ) -> torch.Tensor:
        """Pooled features (E, B, F) of the selected experts (``split``: one expert at a time)."""
        start, stop = experts if experts is not None else (0, self.num_experts)
        if split and stop - start > 1:
            return torch.cat([self(shared, (e, e + 1)) for e in range(start, stop)])
        x = shared
        for block in self.blocks:
            x = block(x, experts)
        pooled = x.mean(dim=(2, 3))
        return pooled.view(pooled.shape[0], stop - start, self.num_features).transpose(0, 1)


class RideNet(nn.Module):
    """``shared`` trunk + ``num_experts`` experts built by ``make_branch(n_experts)``."""

    def __init__(
        self,
        shared: nn.Module,
        make_branch: Callable[[int], ExpertBranch],
        num_experts: int,
        n_classes: int,
        num_features: int,
        scale: float = 30.0,
        fused: bool = True,
        conv_init: str = "fan_in",
        expert_mode: str = "auto",
        channels_last: bool = True,
    ):
        super().__init__()
        check_positive(num_experts=num_experts)
        self.num_experts, self.n_classes, self.num_features = num_experts, n_classes, num_features
        self.fused = fused
        self.shared = shared
        if fused:
            self.experts = make_branch(num_experts)
        else:
            self.experts = nn.ModuleList(make_branch(1) for _ in range(num_experts))
        self.classifier = ExpertCosineClassifier(num_features, n_classes, num_experts, scale)
        self._experts_used: int | None = None
        self.expert_mode = expert_mode
        init_weights(self, conv_mode=conv_init)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def expert_mode(self) -> str:
        """How a fused model runs its experts: "auto", "grouped" or "split" (see module doc)."""
        return self._expert_mode

    @expert_mode.setter
    def expert_mode(self, mode: str) -> None:
        if mode not in EXPERT_MODES:
            raise BvkitError(f"unknown expert_mode {mode!r} (expected one of {EXPERT_MODES})")
        self._expert_mode = mode

    def _split(self, shared: torch.Tensor) -> bool:
        if self.expert_mode == "auto":  # the shared features are bf16 under bf16 autocast
            return shared.device.type == "cpu" and shared.dtype == torch.float32
        return self.expert_mode == "split"

    @property
    def input_size(self) -> int:
        """The input side the model is built for (32 CIFAR, 224 ImageNet)."""
        return getattr(self.shared, "input_size", 32)

    @property
    def experts_used(self) -> int | None:
        """Evaluate with the first ``experts_used`` experts only (None: all of them)."""
        return self._experts_used

    @experts_used.setter
    def experts_used(self, value: int | None) -> None:
        if value is not None and not 1 <= int(value) <= self.num_experts:
            raise BvkitError(f"experts_used must be in 1..{self.num_experts} or None, got {value}")
        self._experts_used = None if value is None else int(value)

    def expert_outputs(
        self, shared: torch.Tensor, start: int = 0, stop: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features (E, B, F) and logits (E, B, C) of experts ``start..stop-1``."""
        stop = self.num_experts if stop is None else stop
        span = None if (start, stop) == (0, self.num_experts) else (start, stop)
        if self.fused:
            features = self.experts(shared, span, split=self._split(shared))
        else:
            features = torch.cat([self.experts[e](shared) for e in range(start, stop)])
        return features, self.classifier(features, span)

    def forward_experts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits`` (B, C) mean over experts, ``expert_logits`` (E, B, C), ``features`` (E, B, F)."""
        features, logits = self.expert_outputs(self.shared(x), 0, self.experts_used)
        return {"logits": logits.mean(dim=0), "expert_logits": logits, "features": features}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_experts(x)["logits"]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The used experts' pooled features side by side: (B, E * F)."""
        features = self.forward_experts(x)["features"]
        return features.transpose(0, 1).reshape(features.shape[1], -1)


def separate_state_dict(fused_state: dict, num_experts: int) -> dict:
    """A fused RideNet's state dict as the ``fused=False`` model's (expert e = e-th dim-0 chunk)."""
    out = {}
    for key, value in fused_state.items():
        if not key.startswith("experts."):
            out[key] = value
            continue
        rest = key[len("experts."):]
        chunks = value.chunk(num_experts, dim=0) if value.dim() else [value] * num_experts
        for e, chunk in enumerate(chunks):
            out[f"experts.{e}.{rest}"] = chunk.clone()
    return out


def fused_state_dict(separate_state: dict, num_experts: int) -> dict:
    """The inverse of ``separate_state_dict``."""
    out, parts = {}, {}
    for key, value in separate_state.items():
        if not key.startswith("experts."):
            out[key] = value
            continue
        index, rest = key[len("experts."):].split(".", 1)
        parts.setdefault(rest, [None] * num_experts)[int(index)] = value
    for rest, values in parts.items():
        out[f"experts.{rest}"] = torch.cat(values) if values[0].dim() else values[0].clone()
    return out


class CifarTrunk(nn.Module):
    """RIDE's shared part on CIFAR: the stem and stage 1."""

    input_size = 32

    def __init__(self, in_channels: int, width: int, blocks: int):
        super().__init__()
        self.stem = cifar_stem(in_channels, width)
        self.stage1 = nn.Sequential(*make_stage(width, width, blocks, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage1(self.stem(x))


def ride_resnet_cifar(
    n_classes: int,
    num_experts: int = 3,
    reduce_dimension: bool = True,
    scale: float = 30.0,
    width: int = 16,
    blocks: int = 5,
    in_channels: int = 3,
    fused: bool = True,
    expert_mode: str = "auto",
    channels_last: bool = True,
) -> RideNet:
    """RIDE ResNet-32: shared stem + stage 1; per expert stages 2-3 at (24, 48) channels with
    ``reduce_dimension`` (else (32, 64)), i.e. ``width * (1.5, 3)`` (``width * (2, 4)``)."""
    check_positive(width=width, blocks=blocks, in_channels=in_channels)
    stage2, stage3 = (width * 3 // 2, width * 3) if reduce_dimension else (2 * width, 4 * width)

    def make_branch(n: int) -> ExpertBranch:
        layers = make_stage(width, stage2, blocks, 2, n, shared_input=True)
        layers += make_stage(stage2, stage3, blocks, 2, n)
        return ExpertBranch(layers, n, stage3)

    return RideNet(
        CifarTrunk(in_channels, width, blocks), make_branch, num_experts, n_classes, stage3,
        scale, fused, expert_mode=expert_mode, channels_last=channels_last,
    )


register_model("ride-resnet32", tags=("cifar", "ride"))(ride_resnet_cifar)
