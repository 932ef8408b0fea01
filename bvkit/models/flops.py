"""Analytic compute of any registered model, in the RIDE paper's convention.

MFLOPs = multiply-accumulates per image / 1e6, counting conv MACs, linear and cosine-classifier
MACs, and 2 ops per BatchNorm output element (scale and shift); ReLU, pooling and residual adds
are free. This convention reproduces the paper's table exactly: ResNet-32 69.47, RIDE shared
part 24.40, one reduced expert 25.63 (RIDE-3 101.27). Layers are found by walking the model
with forward hooks on one dummy image (on the meta device when built from a name, so even
ImageNet models cost nothing to count).

Routed RIDE: ``shared + E[#experts] * expert + routers``, where ``expert_usage[k]`` is the
percentage of samples that used exactly k+1 experts, and router k runs on the samples that
reached expert k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from bvkit.errors import BvkitError
from bvkit.models.layers import CosineClassifier, ExpertCosineClassifier
from bvkit.models.registry import create_model, model_entry
from bvkit.models.ride import RideNet
from bvkit.models.router import ExpertRouter, RoutedRide


def _layer_macs(module: nn.Module, output: torch.Tensor, batch: int) -> float:
    per_image = output.numel() / batch
    if isinstance(module, nn.Conv2d):
        kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        return per_image * kernel
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 2.0 * per_image
    if isinstance(module, (nn.Linear, CosineClassifier, ExpertCosineClassifier)):
        return per_image * module.in_features
    return 0.0


_COUNTED = (nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.Linear, CosineClassifier,
            ExpertCosineClassifier)


def layer_macs(module: nn.Module, run, batch: int = 1) -> dict[str, float]:
    """MACs per image of every counted layer of ``module`` while ``run()`` executes it."""
    found: dict[str, float] = {}
    handles = []
    for name, layer in module.named_modules():
        if isinstance(layer, _COUNTED):
            def hook(mod, inputs, output, name=name):
                found[name] = found.get(name, 0.0) + _layer_macs(mod, output, batch)

            handles.append(layer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return found


def _in_channels(model: nn.Module) -> int:
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    raise BvkitError("model has no convolution to read its input channels from")


def _param_count(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def parse_usage(expert_usage: Sequence[float] | str, num_experts: int) -> np.ndarray:
    """Percentages of samples using exactly 1..n experts: length n, each >= 0, sum ~100."""
    if isinstance(expert_usage, str):
        try:
            expert_usage = [float(v) for v in expert_usage.split(",")]
        except ValueError:
            raise BvkitError(f"expert usage must be comma-separated numbers, got {expert_usage!r}") from None
    usage = np.asarray(expert_usage, dtype=np.float64)
    if usage.ndim != 1 or usage.size != num_experts:
        raise BvkitError(f"expert usage needs {num_experts} percentages (one per expert count), got {usage.size}")
    if not np.all(np.isfinite(usage)) or np.any(usage < 0):
        raise BvkitError("expert usage percentages must be finite and >= 0")
    if abs(usage.sum() - 100.0) > 0.5:
        raise BvkitError(f"expert usage percentages must sum to 100, got {usage.sum():.2f}")
    return usage / usage.sum()


def count_flops(
    model_or_name: nn.Module | str,
    input_size: int | None = None,
    expert_usage: Sequence[float] | str | None = None,
    num_experts: int | None = None,
    n_classes: int = 100,
    **model_kw,
) -> dict:
    """Compute and size of a model: ``mflops``, ``params`` and, for RIDE models, the
    ``shared_mflops``, per-``expert_mflops``, ``router_mflops`` and ``expected_experts``.

    ``model_or_name``: a model (or a ``RoutedRide``) or a registered name, built on the meta
    device with ``n_classes``, ``num_experts`` and ``model_kw``. ``expert_usage``:
    percentages of samples that used 1..n experts (routed inference; adds the routers).
    """
    model, name, router = _model_to_count(model_or_name, num_experts, n_classes, model_kw)
    size = int(input_size or getattr(model, "input_size", 32))
    if size < 1:
        raise BvkitError(f"input size must be >= 1, got {size}")
    macs = _forward_macs(model, size)
    result = {"model": name, "params": _param_count(model)}
    if not isinstance(model, RideNet):
        if expert_usage is not None:
            raise BvkitError(f"model {name!r} has no experts to route (--expert-usage is for RIDE)")
        result["mflops"] = sum(macs.values()) / 1e6
        return result

    n = model.num_experts
    expert_part = sum(v for k, v in macs.items() if k.startswith(("experts.", "classifier")))
    shared = (sum(macs.values()) - expert_part) / 1e6
    expert = expert_part / n / 1e6
    result.update(num_experts=n, shared_mflops=shared, expert_mflops=expert)
    if expert_usage is None:
        result.update(expected_experts=float(n), router_mflops=0.0, mflops=shared + n * expert)
        return result
    expected, routers, router = _routed_costs(model, router, expert_usage)
    result.update(
        expected_experts=expected,
        router_mflops=routers,
        mflops=shared + expected * expert + routers,
        params=result["params"] + _param_count(router),
    )
    return result


def _model_to_count(model_or_name: nn.Module | str, num_experts: int | None, n_classes: int,
                    model_kw: dict) -> tuple[nn.Module, str, ExpertRouter | None]:
    """``(model, name, router)``: a registered name built on the meta device, or a model as
    given (a ``RoutedRide``'s RIDE model and its router)."""
    if isinstance(model_or_name, str):
        name = model_or_name
        model_entry(name)
        if num_experts is not None:
            if "ride" not in model_entry(name).tags:
                raise BvkitError(f"model {name!r} has no experts (--experts is for RIDE models)")
            model_kw["num_experts"] = num_experts
        with torch.device("meta"):
            return create_model(name, n_classes, **model_kw), name, None
    model, name = model_or_name, type(model_or_name).__name__
    if num_experts is not None or model_kw:
        raise BvkitError("num_experts and model keywords only apply when a model name is given")
    if isinstance(model, RoutedRide):
        return model.model, name, model.router
    return model, name, None


def _forward_macs(model: nn.Module, size: int) -> dict[str, float]:
    """The counted layers' MACs on one ``size`` x ``size`` dummy image in eval mode (a RIDE
    model: its shared part and every expert); the model's mode is restored."""
    param = next(model.parameters())
    dummy = torch.zeros(1, _in_channels(model), size, size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, RideNet):
            return layer_macs(model, lambda: model.expert_outputs(model.shared(dummy)))
        return layer_macs(model, lambda: model(dummy))
    finally:
        model.train(was_training)


def _routed_costs(model: RideNet, router: ExpertRouter | None, expert_usage) -> tuple[float, float, ExpertRouter]:
    """``(expected experts, router MFLOPs, router)`` of routed inference at ``expert_usage``
    (a router of the model's size is built when none is given)."""
    n = model.num_experts
    usage = parse_usage(expert_usage, n)
    if n < 2:
        raise BvkitError("routing needs at least 2 experts")
    param = next(model.parameters())
    if router is None:
        with torch.device(param.device):
            router = ExpertRouter(n, model.num_features, model.n_classes).to(param.dtype)
    feats = torch.zeros(1, model.num_features, device=param.device, dtype=param.dtype)
    logits = torch.zeros(1, model.n_classes, device=param.device, dtype=param.dtype)
    per_step = sum(layer_macs(router, lambda: router.step(0, feats, logits)).values()) / 1e6
    reached = usage[::-1].cumsum()[::-1]  # reached[k] = share using >= k+1 experts
    expected = float(np.dot(np.arange(1, n + 1), usage))
    return expected, per_step * float(reached[: n - 1].sum()), router
