import pandas as pd
import pytest

from bvkit.cli import main
from bvkit.study import load_study


@pytest.mark.slow
def test_demo_wiring_with_the_fake_trainer(tmp_path, fake_env, capsys):
    pytest.importorskip("bvkit.report")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Squared-loss decomposition per shot split" in printed and "bvkit demo finished" in printed
    study = load_study(out)
    assert study.methods == ["ce", "crt", "ldam-drw", "ride-ea-3"]
    assert {name: arrays["logits"].shape[0] for name, arrays in study.predictions.items()} == {
        "ce": 5, "crt": 5, "ldam-drw": 5, "ride-ea-3": 5}
    per_split = pd.read_csv(out / "tables" / "per_split.csv")
    assert set(per_split["method"]) == {"ce", "crt", "ldam-drw", "ride-ea-3"}
    assert {"bias", "variance", "accuracy"} <= set(per_split.columns)
    assert (out / "figures" / "bias.png").stat().st_size > 0
    assert (out / "figures" / "expert_usage.png").is_file()  # the routed RIDE runs
    calls = len(fake_env.read_text().splitlines())
    assert calls == 20  # one call per run: crt's reuse CE's backbone, they do not train it again
    assert main(["demo", "--out", str(out), "--jobs", "1"]) == 0  # cached: nothing retrains
    assert len(fake_env.read_text().splitlines()) == calls
    assert "20 cached" in capsys.readouterr().out


def test_study_without_action_prints_help(capsys):
    assert main(["study"]) == 2
    assert "run" in capsys.readouterr().out
