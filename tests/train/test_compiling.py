"""``--compile``: auto compiles only where a measurement says the compile pays within the run;
on compiles stage one's training forward, and the run trains as the eager one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import TINY

from bvkit.errors import BvkitError
from bvkit.train.compiling import MEASURED, Measured, resolve_compile


def test_on_and_off_are_taken_as_said():
    assert resolve_compile("on", torch.device("cpu"), 1)[0] is True
    assert resolve_compile("off", "cuda:1", 10**9)[0] is False


def test_auto_leaves_this_cpu_eager_because_its_compiled_step_was_not_faster():
    assert MEASURED["cpu"].speedup < 1 and MEASURED["cpu"].steps_to_pay() == float("inf")
    enabled, reason = resolve_compile("auto", torch.device("cpu"), 10**9)
    assert not enabled and "not faster" in reason and MEASURED["cpu"].source in reason


def test_auto_compiles_once_the_run_is_long_enough_to_repay_the_compile():
    # 1.5x faster: each step saves 0.1 s x (1 - 1/1.5) = 1/30 s, so 30 s of compiling pays after 900 steps
    table = {"cpu": Measured(speedup=1.5, compile_s=30.0, step_s=0.1, source="a bench")}
    assert table["cpu"].steps_to_pay() == pytest.approx(900)
    assert resolve_compile("auto", "cpu", 899, table)[0] is False
    assert resolve_compile("auto", "cpu", 901, table)[0] is True
    assert resolve_compile("auto", "cuda:0", 10**9, table) == (False, "auto: no measurement of the compiled step on cuda")


def test_an_unknown_mode_is_a_one_line_error():
    with pytest.raises(BvkitError, match="compile must be one of auto, on, off, got 'always'"):
        resolve_compile("always", "cpu", 1)


def test_a_compiled_run_trains_as_the_eager_one_and_records_what_it_compiled(tiny_data, tmp_path):
    """The compiled run stays as close to the eager one as eager stays to itself under another
    convolution backend (oneDNN off): both differ by float reassociation only, which a few SGD
    steps of this tiny fp32 network amplify to ~1e-3 of the early layers' gradients."""
    from bvkit.train import train
    from bvkit.train.checkpoint import load_checkpoint

    settings = {"device": "cpu", "epochs": 2, "precision": "fp32", **TINY}
    eager = train("ce", tiny_data, out=tmp_path / "eager", compile="off", **settings)
    compiled = train("ce", tiny_data, out=tmp_path / "compiled", compile="on", **settings)
    with torch.backends.mkldnn.flags(enabled=False):
        other_backend = train("ce", tiny_data, compile="off", **settings)
    assert eager.metrics["compile"] == {"mode": "off", "enabled": False, "reason": "compile=off"}
    record = compiled.metrics["compile"]
    assert record["enabled"] and record["graphs"] >= 1  # the forward was compiled (its graphs counted)

    def gap(run):
        return np.abs(run.logits - eager.logits).max()

    assert 0 < gap(compiled) <= 2 * gap(other_backend)
    np.testing.assert_allclose([row["loss"] for row in compiled.history], [row["loss"] for row in eager.history],
                               rtol=1e-4)
    # the checkpoint holds the model's own keys: a compiled run resumes and is read as any other
    assert load_checkpoint(tmp_path / "compiled" / "checkpoint.pt")["model"].keys() == \
        load_checkpoint(tmp_path / "eager" / "checkpoint.pt")["model"].keys()


def test_a_method_with_its_own_stage_one_says_it_was_not_compiled(tiny_data):
    from bvkit.train import train

    result = train("bbn", tiny_data, device="cpu", epochs=1, compile="on", **TINY)
    assert result.metrics["compile"] == {"mode": "on", "enabled": False,
                                         "reason": "bbn: its own stage one is not compiled"}
