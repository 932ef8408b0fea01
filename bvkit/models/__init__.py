"""Models: CIFAR ResNets, RIDE experts (fused) and router, ImageNet-size variants, FLOPs.

``create_model(name, num_classes, **kw)`` / ``list_models("ride*")`` over a timm-style registry.
"""

from bvkit.models import resnet_cifar, resnet_imagenet, ride  # noqa: F401  (registers models)
from bvkit.models.flops import count_flops
from bvkit.models.layers import CosineClassifier, ExpertCosineClassifier
from bvkit.models.registry import create_model, list_models, register_model
from bvkit.models.resnet_cifar import ResNetCifar
from bvkit.models.resnet_imagenet import ResNetImageNet
from bvkit.models.ride import RideNet, fused_state_dict, separate_state_dict
from bvkit.models.router import ExpertRouter, RoutedRide

__all__ = [
    "CosineClassifier",
    "ExpertCosineClassifier",
    "ExpertRouter",
    "ResNetCifar",
    "ResNetImageNet",
    "RideNet",
    "RoutedRide",
    "count_flops",
    "create_model",
    "fused_state_dict",
    "list_models",
    "register_model",
    "separate_state_dict",
]
