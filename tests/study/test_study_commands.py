import pandas as pd
import pytest

from bvkit.cli import main
from bvkit.study import load_study


@pytest.mark.slow
def test_demo_wiring_with_the_fake_trainer(tmp_path, fake_env, capsys):
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


def test_gather_writes_a_studys_shared_files_from_its_finished_runs_alone(spec_file, tmp_path, fake_env, capsys):
    """`bvkit study gather` rebuilds metrics.csv and the complete methods' predictions from the
    run directories: as `study run` left them, and for a study in progress, with its pending
    runs listed as such and no prediction file for an incomplete method."""
    import shutil

    out = tmp_path / "study"
    assert main(["study", "run", str(spec_file), "--out", str(out)]) == 0
    written = {name: (out / name).read_bytes() for name in ("metrics.csv", "predictions/CE.npz")}
    for name in written:
        (out / name).unlink()
    assert main(["study", "gather", str(out)]) == 0
    assert "complete methods: CE, RIDE-2" in capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in written} == written
    metrics = pd.read_csv(out / "metrics.csv")
    unfinished = metrics.loc[(metrics["method"] == "RIDE-2") & (metrics["subset"] == 2), "run_id"].item()
    shutil.rmtree(out / "runs" / unfinished)  # as if it were still training
    assert main(["study", "gather", str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.loc[metrics["run_id"] == unfinished, "status"].item() == "pending"
    assert (out / "predictions" / "CE.npz").exists() and not (out / "predictions" / "RIDE-2.npz").exists()
    assert main(["study", "gather", str(tmp_path / "nowhere")]) == 2
