"""Models: CIFAR ResNets, RIDE experts (fused) and router, ImageNet-size variants, FLOPs.

``create_model(name, n_classes, **kw)`` / ``list_models("ride*")`` over a timm-style registry.
Names load on first use, so ``bvkit flops --help`` (and every other CLI start) needs no torch.
"""

from bvkit.lazy import lazy_exports

_EXPORTS = {
    "CosineClassifier": "bvkit.models.layers",
    "ExpertCosineClassifier": "bvkit.models.layers",
    "ExpertRouter": "bvkit.models.router",
    "ResNetCifar": "bvkit.models.resnet_cifar",
    "ResNetImageNet": "bvkit.models.resnet_imagenet",
    "RideNet": "bvkit.models.ride",
    "RoutedRide": "bvkit.models.router",
    "count_flops": "bvkit.models.flops",
    "create_model": "bvkit.models.registry",
    "fused_state_dict": "bvkit.models.ride",
    "list_models": "bvkit.models.registry",
    "register_model": "bvkit.models.registry",
    "separate_state_dict": "bvkit.models.ride",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("bvkit.models", _EXPORTS, globals())
