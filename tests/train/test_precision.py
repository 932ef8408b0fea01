"""Training precision: how ``auto`` is resolved, what runs in bf16 and what stays float32.

Tolerances (bf16 keeps 8 significant bits, a relative step of 2**-8 = 0.4 %): logits of a
tiny ResNet / RIDE in bf16 within 3 % of the logit range of the float32 model's and the same
predicted class on at least 95 % of the inputs; softmax probabilities within 0.02; the loss of
a few bf16 training steps within 2 % of the float32 steps' from the same weights and batches.
"""

import json

import pytest
import torch
from torch import nn
from train_helpers import TINY

from bvkit.cli import main
from bvkit.errors import BvkitError
from bvkit.losses import create_loss
from bvkit.methods import create_method
from bvkit.models import create_model
from bvkit.study.spec import parse_spec
from bvkit.train import devices, loop
from bvkit.train.devices import autocast, cpu_flags, fast_bf16, float_outputs, resolve_precision
from bvkit.train.loop import train_step

CPU = torch.device("cpu")
SMALL = {"width": 4, "blocks": 1}


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the CPU is said to compute natively: ``cpu_bf16(True)``."""
    def set_capability(fast: bool):
        monkeypatch.setattr(devices, "_cpu_has_bf16", lambda: fast)
    return set_capability


# ---------------------------------------------------------------- selection


def test_auto_is_bf16_exactly_where_the_cpu_has_fast_bf16(cpu_bf16):
    cpu_bf16(True)
    assert fast_bf16(CPU) and resolve_precision("auto", CPU) == "bf16"
    cpu_bf16(False)
    assert not fast_bf16(CPU) and resolve_precision("auto", CPU) == "fp32"
    for fast in (True, False):  # an explicit choice is kept whatever the hardware
        cpu_bf16(fast)
        assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"


def test_auto_on_cuda_asks_for_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"  # asked without emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"  # emulated only (pre-Ampere)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not fast_bf16(torch.device("cuda"))


def test_the_cpu_flags_fallback_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(info)) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_the_real_cpu_answer_agrees_with_its_flags():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    assert fast_bf16(CPU) == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None, 16])
def test_bad_precision_names_are_one_line_errors(bad):
    for call in (lambda: resolve_precision(bad, CPU), lambda: create_method("ce", precision=bad)):
        with pytest.raises(BvkitError, match="precision must be one of auto, bf16, fp32") as err:
            call()
        assert len(str(err.value).splitlines()) == 1


def test_a_spec_takes_precision_and_refuses_a_bad_one():
    base = '[data]\ndataset = "synthetic-lt"\n[subsets]\ncount = 2\n'
    method = '[[methods]]\nname = "CE"\nmethod = "ce"\n'
    spec = parse_spec(base + '[train]\nprecision = "fp32"\n' + method)
    assert spec.methods[0].overrides["precision"] == "fp32" and spec.methods[0].recipe.precision == "fp32"
    auto = parse_spec(base + method).methods[0]  # the default adds no override
    assert auto.precision == "auto" and "precision" not in auto.overrides and auto.recipe.precision == "auto"
    with pytest.raises(BvkitError, match=r"\[train\] precision must be one of auto, bf16, fp32, got 'half'"):
        parse_spec(base + '[train]\nprecision = "half"\n' + method)


# ---------------------------------------------------------------- what runs in bf16


def test_autocast_follows_the_run_precision(cpu_bf16):
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    assert conv(x).dtype == torch.float32  # outside a run: float32
    with autocast(CPU, "fp32"):
        assert conv(x).dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert conv(x).dtype == torch.bfloat16
    for fast, dtype in ((True, torch.bfloat16), (False, torch.float32)):  # auto: as resolve_precision
        cpu_bf16(fast)
        with autocast(CPU, "auto"):
            assert conv(x).dtype == dtype
    assert conv(x).dtype == torch.float32  # nothing outlives the block


def _trained_a_little(name, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, 10, **SMALL, **kwargs).train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(3):
            model(torch.randn(64, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("name, kwargs", [("resnet32", {}), ("resnet32-ldam", {}),
                                          ("ride-resnet32", {"num_experts": 3})])
def test_bf16_outputs_match_float32_within_bf16_tolerance(name, kwargs):
    model = _trained_a_little(name, **kwargs)
    x = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x)
        with autocast(CPU, "bf16"):
            out = model(x)
    assert out.dtype == torch.float32  # the heads run in float32: logits are not rounded to bf16
    scale = (reference.max() - reference.min()).item()
    assert (out - reference).abs().max().item() <= 0.03 * scale
    assert (out.argmax(1) == reference.argmax(1)).float().mean().item() >= 0.95
    assert (out.softmax(1) - reference.softmax(1)).abs().max().item() <= 0.02
    assert not torch.equal(out, reference)  # bf16 did run


def test_rides_auto_mode_groups_its_experts_in_bf16_and_splits_them_in_float32(monkeypatch):
    from bvkit.models.ride import RideNet

    model = _trained_a_little("ride-resnet32", num_experts=3)
    modes = []
    real = RideNet._split
    monkeypatch.setattr(RideNet, "_split", lambda self, shared: modes.append(real(self, shared)) or modes[-1])
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        split = model(x)
        with autocast(CPU, "bf16"):
            grouped = model(x)
    assert modes == [True, False]
    model.expert_mode = "split"  # the same numbers either way, within bf16 tolerance
    with torch.no_grad(), autocast(CPU, "bf16"):
        torch.testing.assert_close(model(x), grouped, rtol=0, atol=0.03 * (split.max() - split.min()).item())


def test_a_bf16_step_computes_the_loss_in_float32_outside_autocast():
    model = create_model("ride-resnet32", 10, num_experts=2, **SMALL).train()
    criterion = create_loss("ride", [50, 30, 20, 10, 8, 6, 5, 4, 3, 2])
    criterion.set_epoch(200)  # DRW weights and class-wise temperatures on
    seen = {}

    def loss(output, target):
        seen["dtypes"] = {key: value.dtype for key, value in output.items()}
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        value = criterion(output, target)
        seen["loss"] = value.dtype
        return value

    def conv_dtype(module, args, out):
        seen.setdefault("conv", out.dtype)

    model.shared.stem[0].register_forward_hook(conv_dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    train_step(model.forward_experts, loss, optimizer, x, y, CPU, "bf16")
    assert seen["conv"] == torch.bfloat16  # the network ran in bf16 ...
    assert set(seen["dtypes"].values()) == {torch.float32} and not seen["autocast"]  # ... the loss did not
    assert seen["loss"] == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # and weights, BN, optimizer stay float32
    assert all(b.dtype == torch.float32 for name, b in model.named_buffers() if "running" in name)
    assert all(s["momentum_buffer"].dtype == torch.float32 for s in optimizer.state.values())


def test_bn_statistics_of_bf16_activations_are_computed_in_float32():
    # under autocast a conv hands BN bf16 activations; BN's mean and variance (and its running
    # buffers) are those of float32 arithmetic on the same values
    x = (torch.randn(64, 8, 8, 8, generator=torch.Generator().manual_seed(0)) * 3 + 5).to(torch.bfloat16)
    in_bf16, in_fp32 = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
    in_bf16(x.contiguous(memory_format=torch.channels_last)), in_fp32(x.float())
    assert in_bf16.running_mean.dtype == torch.float32
    torch.testing.assert_close(in_bf16.running_mean, in_fp32.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(in_bf16.running_var, in_fp32.running_var, rtol=1e-6, atol=1e-6)


def test_float_outputs_casts_floating_tensors_only():
    out = float_outputs({"logits": torch.ones(2, 3, dtype=torch.bfloat16), "n": torch.ones(2, dtype=torch.long)})
    assert out["logits"].dtype == torch.float32 and out["n"].dtype == torch.long


def test_a_few_bf16_steps_follow_the_float32_loss_curve():
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(3))
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model("resnet32", 10, **SMALL).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        curves[precision] = [train_step(model, nn.CrossEntropyLoss(), optimizer, x, y, CPU, precision)[0].item()
                             for _ in range(6)]
    assert curves["fp32"][-1] < curves["fp32"][0]  # it learns
    for a, b in zip(curves["bf16"], curves["fp32"]):
        assert abs(a - b) <= 0.02 * b, curves


# ---------------------------------------------------------------- a run


def test_a_run_records_its_precision_and_evaluates_in_it(tiny_data, cpu_bf16, monkeypatch):
    from bvkit.train import train

    seen = []  # (precision, gradients on) at every autocast the run enters
    real = loop.autocast
    monkeypatch.setattr(loop, "autocast", lambda device, precision, **kw:
                        seen.append((precision, torch.is_grad_enabled())) or real(device, precision, **kw))
    cpu_bf16(True)
    result = train("ce", tiny_data, device="cpu", epochs=1, **TINY)
    assert result.metrics["precision"] == "bf16"
    assert {precision for precision, _ in seen} == {"bf16"}
    assert {grad for _, grad in seen} == {True, False}  # training steps and predictions (validation, test)
    assert nn.Conv2d(3, 4, 3)(torch.randn(2, 3, 8, 8)).dtype == torch.float32  # the run's precision ended with it
    cpu_bf16(False)
    assert train("ce", tiny_data, device="cpu", epochs=1, **TINY).metrics["precision"] == "fp32"
    assert train("ce", tiny_data, device="cpu", epochs=1, precision="bf16", **TINY).metrics["precision"] == "bf16"


def test_a_failing_run_leaves_no_precision_behind(tiny_data):
    from bvkit.train import train

    with pytest.raises(BvkitError):
        train("ce", tiny_data, device="cpu", epochs=1, precision="bf16", **{**TINY, "model_kwargs.width": 0})
    assert not torch.is_autocast_enabled("cpu") and nn.Conv2d(3, 4, 3)(torch.randn(2, 3, 8, 8)).dtype == torch.float32


def test_bvkit_train_takes_precision(tmp_path, capsys):
    args = ["train", "--dataset", "synthetic-lt", "--imbalance", "10", "--n-max", "40", "--model-width", "4",
            "--set", "model_kwargs.blocks=1", "--set", "val_per_class=5", "--device", "cpu", "--epochs", "1",
            "--method", "ce", "--precision", "fp32", "--out", str(tmp_path)]
    assert main(args) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == "fp32"
