"""MFLOPs in the RIDE paper's convention, from Python and from `bvkit flops`."""

import json

import pytest
import torch

from analytic_flops import bbn_extra_macs, resnet32_macs

from bvkit.cli import main
from bvkit.errors import BvkitError
from bvkit.models import RoutedRide, count_flops, create_model

PAPER_USAGE = [40.99, 9.47, 49.54]


def test_paper_numbers():
    r32 = count_flops("resnet32")
    assert r32["mflops"] == pytest.approx(69.47, abs=0.2)
    assert r32["params"] == pytest.approx(0.47e6, abs=0.005e6)
    ride = count_flops("ride-resnet32", num_experts=3)
    assert ride["shared_mflops"] == pytest.approx(24.40, abs=0.01)
    assert ride["expert_mflops"] == pytest.approx(25.63, abs=0.01)
    assert ride["mflops"] == pytest.approx(101.3, abs=0.2)
    routed = count_flops("ride-resnet32", num_experts=3, expert_usage=PAPER_USAGE)
    assert routed["mflops"] == pytest.approx(77.8, abs=0.2)
    assert routed["expected_experts"] == pytest.approx(2.0855)
    assert 0 < routed["router_mflops"] < 0.01
    assert count_flops("ride-resnet32", num_experts=2)["mflops"] == pytest.approx(75.7, abs=0.2)
    assert count_flops("ride-resnet32", num_experts=4)["mflops"] == pytest.approx(126.9, abs=0.2)


@pytest.mark.parametrize("width, blocks, classes, size, in_channels",
                         [(16, 5, 100, 32, 3), (4, 1, 10, 32, 3), (8, 2, 7, 32, 1), (4, 3, 10, 28, 1)])
def test_the_counter_gives_the_hand_derived_compute(width, blocks, classes, size, in_channels):
    """count_flops walks the model; tests/analytic_flops.py adds up the architecture by hand."""
    kw = {"n_classes": classes, "width": width, "blocks": blocks, "in_channels": in_channels, "input_size": size}
    macs = resnet32_macs(width, blocks, classes, size, in_channels)
    assert count_flops("resnet32", **kw)["mflops"] * 1e6 == pytest.approx(macs, abs=1e-3)
    assert count_flops("bbn-resnet32", **kw)["mflops"] * 1e6 == pytest.approx(
        macs + bbn_extra_macs(width, blocks, classes, size), abs=1e-3)
    if (width, blocks, classes) == (16, 5, 100):
        assert macs == 69_474_560  # the RIDE paper's ResNet-32: 69.47


def test_model_instances_and_imagenet():
    assert count_flops(create_model("ride-resnet32", 100))["mflops"] == pytest.approx(101.27, abs=0.01)
    routed = RoutedRide(create_model("ride-resnet32", 100))
    assert count_flops(routed, expert_usage=PAPER_USAGE)["mflops"] == pytest.approx(77.84, abs=0.01)
    # ImageNet ResNet-50: the usual 4.1 GMACs at 224 (meta device, no compute)
    assert count_flops("resnet50", n_classes=1000)["mflops"] == pytest.approx(4111, abs=5)
    ride50 = count_flops("ride-resnet50", n_classes=1000, num_experts=2)
    assert ride50["shared_mflops"] < ride50["expert_mflops"] * 2
    # a smaller input costs less; width scales the CIFAR models
    assert count_flops("resnet32", input_size=16)["mflops"] < 69.47 / 3
    assert count_flops("resnet32", width=8)["mflops"] < 69.47 / 3


@pytest.mark.parametrize(
    "usage",
    [[50.0, 50.0], [50.0, 10.0, 30.0], [-10.0, 60.0, 50.0], "40,x,60"],
)
def test_bad_usage(usage):
    with pytest.raises(BvkitError):
        count_flops("ride-resnet32", num_experts=3, expert_usage=usage)


def test_usage_needs_experts():
    with pytest.raises(BvkitError):
        count_flops("resnet32", expert_usage=[100.0])
    with pytest.raises(BvkitError):
        count_flops("resnet32", num_experts=3)


def test_cli_values(capsys):
    assert main(["flops", "resnet32"]) == 0
    assert "69.47 MFLOPs" in capsys.readouterr().out
    assert main(["flops", "ride-resnet32", "--experts", "3"]) == 0
    assert "101.27 MFLOPs" in capsys.readouterr().out
    args = ["flops", "ride-resnet32", "--experts", "3", "--expert-usage", "40.99,9.47,49.54", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"model", "mflops", "params"} <= result.keys()
    assert result["model"] == "ride-resnet32"
    assert result["mflops"] == pytest.approx(77.8, abs=0.2)


@pytest.mark.parametrize(
    "args",
    [
        ["flops", "no-such-net"],
        ["flops", "ride-resnet32", "--experts", "3", "--expert-usage", "50,50"],
        ["flops", "ride-resnet32", "--experts", "3", "--expert-usage", "10,10,10"],
        ["flops", "ride-resnet32", "--expert-usage", "a,b,c"],
        ["flops", "resnet32", "--experts", "2"],
        ["flops", "resnet32", "--input-size", "0"],
        ["flops", "resnet32", "--num-classes", "0"],
        ["flops"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bvkit: error:")
    assert "Traceback" not in captured.err


def test_counting_leaves_model_state_alone():
    model = create_model("ride-resnet32", 10, width=4, blocks=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_cli_subprocess_exit_code():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bvkit.cli", "flops", "ride-resnet32", "--experts", "2",
         "--expert-usage", "70,20"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "sum to 100" in proc.stderr
