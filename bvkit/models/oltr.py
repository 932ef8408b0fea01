"""OLTR's network (Liu et al., CVPR 2019) on the CIFAR ResNet: modulated attention on the last
feature map, then the dynamic meta-embedding read by a cosine-norm classifier.

Follows the official code (zhmiao/OpenLongTailRecognition-OLTR): ``ModulatedAttLayer``,
``MetaEmbedding_Classifier`` and ``CosNorm_Classifier``.

* Modulated attention: a non-local block (theta/phi/g 1x1 convs to half the channels, softmax
  over positions, ``conv_mask`` back to the channels) gated by a spatial attention map (a linear
  layer over the flattened map, softmax over positions): ``x + spatial * mask``. ``conv_mask``
  starts at zero, so the block starts as the identity (see ``ModulatedAttention``).
* Meta-embedding of the pooled feature ``v``: memory ``M`` = the class centroids (C, d);
  reachability ``gamma = 10 / min_i ||v - c_i||``; hallucinator ``o = softmax(W_h v)``; memory
  feature ``o^T M``; concept selector ``e = tanh(W_e v)``;
  ``v_meta = gamma * (v + e * o^T M)``.
* Cosine-norm classifier: ``16 * x / (1 + ||x||) . w_c / ||w_c||``, i.e. the official
  ``||x|| / (1 + ||x||) * x / ||x||`` (the paper's equation squares the norms; the code does not).

The centroids are a parameter of the model read *detached* by the forward: in the official code
the memory is the discriminative centroid loss's learnable centroids (``.data``), initialised
from the class means of the stage-one features; the OLTR procedure trains them through that loss
(``bvkit.train.procedures.oltr``).

Compute: the products of two activations (attention scores and read-out, the memory read-out,
the distances to the centroids) are ``CountedProduct`` layers, which ``count_flops`` counts
like linear layers (output elements x ``in_features``), so the model's MFLOPs are exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bvkit.errors import BvkitError
from bvkit.models.layers import CosineClassifier, init_weights
from bvkit.models.registry import register_model
from bvkit.models.resnet_cifar import check_positive, cifar_stem, make_stages

REACHABILITY_SCALE = 10.0  # the official MetaEmbedding_Classifier's ``scale``
COSNORM_SCALE = 16.0  # the official CosNorm_Classifier's ``scale``


class CountedProduct(nn.Linear):
    """A parameter-free product of two activations, ``fn(a, b)``, each output element a dot
    product of length ``in_features``.

    It subclasses ``nn.Linear`` only so that ``bvkit.models.count_flops`` counts its
    multiply-accumulates as it counts a linear layer's; it has no weight, so initialise the
    layers around it one by one rather than with ``init_weights`` over the whole model.
    """

    def __init__(self, fn, in_features: int):
        nn.Module.__init__(self)
        self.fn, self.in_features = fn, in_features
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fn(a, b)

    def extra_repr(self) -> str:
        return f"{getattr(self.fn, '__name__', self.fn)}, in_features={self.in_features}"


def euclidean_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, d), (M, d) -> (N, M) Euclidean distances, in float32 whatever the autocast."""
    return torch.cdist(a.float(), b.float())


class ModulatedAttention(nn.Module):
    """The official ``ModulatedAttLayer`` (embedded Gaussian) on a ``spatial`` x ``spatial`` map.

    Init as the layer's own ``init_weights``: Kaiming-normal theta/phi/g with zero biases,
    ``conv_mask`` zero (the block starts as the identity), ``fc_spatial`` PyTorch's default.
    (In the official ResNet the network's blanket conv init runs after the layer's and
    overwrites ``conv_mask`` with a random one; we keep the layer's intended zero start, so
    stage two starts exactly from the stage-one features.)
    """

    def __init__(self, channels: int, spatial: int, reduction: int = 2):
        super().__init__()
        self.channels, self.spatial = channels, spatial
        self.inter_channels = max(channels // reduction, 1)
        positions = spatial * spatial
        self.theta = nn.Conv2d(channels, self.inter_channels, 1)
        self.phi = nn.Conv2d(channels, self.inter_channels, 1)
        self.g = nn.Conv2d(channels, self.inter_channels, 1)
        self.scores = CountedProduct(torch.matmul, self.inter_channels)  # (P, i) @ (i, P)
        self.read = CountedProduct(torch.matmul, positions)  # (P, P) @ (P, i)
        self.conv_mask = nn.Conv2d(self.inter_channels, channels, 1, bias=False)
        self.fc_spatial = nn.Linear(channels * positions, positions)
        with torch.no_grad():
            for conv in (self.theta, self.phi, self.g):
                nn.init.kaiming_normal_(conv.weight)
                conv.bias.zero_()
            self.conv_mask.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        if (height, width) != (self.spatial, self.spatial):
            raise BvkitError(f"modulated attention built for {self.spatial}x{self.spatial} feature maps, "
                             f"got {height}x{width} (set the model's input_size)")
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, P, i)
        phi = self.phi(x).flatten(2)  # (B, i, P)
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, P, i)
        attention = self.scores(theta, phi).softmax(dim=-1)  # (B, P, P)
        context = self.read(attention, g).transpose(1, 2).reshape(batch, self.inter_channels, height, width)
        mask = self.conv_mask(context)
        spatial = self.fc_spatial(x.flatten(1)).softmax(dim=1).view(batch, 1, height, width)
        return x + spatial * mask


class CosNormClassifier(CosineClassifier):
    """The official ``CosNorm_Classifier``: ``scale * x / (1 + ||x||) . w_c / ||w_c||``, so every
    logit lies in ``(-scale, scale)`` and a short ``x`` gives flatter logits (lower confidence)."""

    def __init__(self, in_features: int, n_classes: int, scale: float = COSNORM_SCALE):
        super().__init__(in_features, n_classes, scale)

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        squashed = features / (1 + features.norm(dim=-1, keepdim=True))  # ||x||/(1+||x||) * x/||x||
        return self.scale * squashed @ F.normalize(self.weight, dim=-1).T


class MetaEmbedding(nn.Module):
    """The official ``MetaEmbedding_Classifier`` with its memory (the class centroids) inside."""

    def __init__(self, num_features: int, n_classes: int, reachability_scale: float = REACHABILITY_SCALE,
                 classifier_scale: float = COSNORM_SCALE):
        super().__init__()
        self.reachability_scale = reachability_scale
        self.centroids = nn.Parameter(torch.zeros(n_classes, num_features))
        self.distances = CountedProduct(euclidean_distances, num_features)
        self.hallucinator = nn.Linear(num_features, n_classes)
        self.memory_read = CountedProduct(torch.matmul, n_classes)  # (B, C) @ (C, d)
        self.selector = nn.Linear(num_features, num_features)
        self.classifier = CosNormClassifier(num_features, n_classes, classifier_scale)

    def reachability(self, direct: torch.Tensor) -> torch.Tensor:
        """``scale / min_i ||v - c_i||`` per sample, (B, 1) (guarded against a zero distance)."""
        nearest = self.distances(direct, self.centroids.detach()).min(dim=1, keepdim=True).values
        return self.reachability_scale / nearest.clamp_min(1e-12)

    def embed(self, direct: torch.Tensor) -> torch.Tensor:
        """``v_meta = gamma * (v + tanh(W_e v) * softmax(W_h v)^T M)`` of the direct features ``v``."""
        memory = self.memory_read(self.hallucinator(direct).softmax(dim=1), self.centroids.detach())
        selector = torch.tanh(self.selector(direct))
        return self.reachability(direct) * (direct + selector * memory)

    def forward(self, direct: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(direct))


class OLTRResNetCifar(nn.Module):
    """CIFAR ResNet-(6*blocks+2) (``ResNetCifar``'s stem and stages) + modulated attention +
    meta-embedding. ``input_size`` fixes the last feature map's size for the spatial attention."""

    def __init__(self, n_classes: int, width: int = 16, blocks: int = 5, in_channels: int = 3,
                 input_size: int = 32, reachability_scale: float = REACHABILITY_SCALE,
                 classifier_scale: float = COSNORM_SCALE, channels_last: bool = True):
        super().__init__()
        check_positive(width=width, blocks=blocks, in_channels=in_channels, input_size=input_size)
        self.input_size = input_size
        self.stem = cifar_stem(in_channels, width)
        self.stages = make_stages(width, blocks)
        init_weights(self.stem, conv_mode="fan_in")
        init_weights(self.stages, conv_mode="fan_in")
        self.num_features = 4 * width
        spatial = math.ceil(math.ceil(input_size / 2) / 2)  # two stride-2 stages
        self.attention = ModulatedAttention(self.num_features, spatial)
        self.meta = MetaEmbedding(self.num_features, n_classes, reachability_scale, classifier_scale)
        if channels_last:  # as ResNetCifar: faster small-channel convs on CPU, same numbers
            self.to(memory_format=torch.channels_last)

    @property
    def centroids(self) -> nn.Parameter:
        """The memory: one centroid per class, (C, d)."""
        return self.meta.centroids

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The direct feature ``v``: attention-modulated last map, average-pooled."""
        return self.attention(self.stages(self.stem(x))).mean(dim=(2, 3))

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits and the direct features (what the centroid loss pulls)."""
        features = self.forward_features(x)
        return {"logits": self.meta(features), "features": features}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.meta(self.forward_features(x))

    def load_stage_one(self, state: dict) -> None:
        """Backbone and hallucinator from a plain ResNetCifar's state (stage one): the official
        stage two loads the stage-one feature model and its linear classifier into
        ``fc_hallucinator``."""
        try:
            self.stem.load_state_dict(_part(state, "stem."))
            self.stages.load_state_dict(_part(state, "stages."))
            self.meta.hallucinator.load_state_dict(_part(state, "classifier."))
        except RuntimeError as err:
            raise BvkitError(f"stage-one model does not fit OLTR's backbone: {str(err).splitlines()[0]}") from None


def _part(state: dict, prefix: str) -> dict:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


@register_model("oltr-resnet32", tags=("cifar",))
def oltr_resnet32(n_classes: int, width: int = 16, blocks: int = 5, in_channels: int = 3,
                  input_size: int = 32, reachability_scale: float = REACHABILITY_SCALE,
                  classifier_scale: float = COSNORM_SCALE, channels_last: bool = True) -> OLTRResNetCifar:
    """ResNet-32 with OLTR's modulated attention, meta-embedding memory and cosine-norm classifier."""
    return OLTRResNetCifar(n_classes, width, blocks, in_channels, input_size, reachability_scale,
                           classifier_scale, channels_last)
