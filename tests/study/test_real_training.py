"""The study runner with the real trainer (bvkit.train) on a tiny synthetic-lt study."""

import numpy as np
import pandas as pd
import pytest

from bvkit.study import load_study, run_study

pytestmark = pytest.mark.slow

SPEC = """\
name = "real-tiny"
[data]
dataset = "synthetic-lt"
imbalance = 10.0
n_max = 40
[subsets]
scheme = "bootstrap"
count = 2
[train]
epochs = 1
batch_size = 64
device = "cpu"
model_width = 4
options = { "model_kwargs.blocks" = 1, val_per_class = 5 }
[[methods]]
name = "ce"
method = "ce"
[[methods]]
name = "ride-2"
method = "ride"
options = { "model_kwargs.num_experts" = 2 }
"""


def test_tiny_real_study_trains_gathers_and_caches(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv("BVKIT_STUDY_RUNNER", raising=False)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "study"
    assert run_study(spec, out, log=None) == {"cached": 0, "ran": 4, "failed": 0}
    study = load_study(out)
    metrics = study.metrics
    assert set(metrics["status"]) == {"done"} and metrics["all"].between(0, 1).all()
    assert (metrics["mflops"] > 0).all() and (metrics["seconds"] > 0).all()
    for name in ("ce", "ride-2"):
        arrays = study.predictions[name]
        assert arrays["logits"].shape == (2, len(arrays["labels"]), 10) and np.isfinite(arrays["logits"]).all()
        assert arrays["train_counts"][0] == 40
    # the runs trained on their own bootstrap subset: the histories differ
    histories = [pd.read_csv(out / "runs" / r / "history.csv") for r in metrics["run_id"][metrics["method"] == "ce"]]
    assert not histories[0]["loss"].equals(histories[1]["loss"])
    assert run_study(spec, out, log=None) == {"cached": 4, "ran": 0, "failed": 0}


def test_the_papers_other_baselines_run_as_study_methods(tmp_path, monkeypatch):
    """BBN and LFME train through their own procedures inside a study, each run on its own
    subset, and their predictions decompose like any other method's."""
    pytest.importorskip("torch")
    monkeypatch.delenv("BVKIT_STUDY_RUNNER", raising=False)
    head, _, _ = SPEC.partition("[[methods]]")
    spec = tmp_path / "spec.toml"
    spec.write_text(head + '[[methods]]\nname = "bbn"\nmethod = "bbn"\n[[methods]]\nname = "lfme"\nmethod = "lfme"\n')
    out = tmp_path / "study"
    assert run_study(spec, out, log=None) == {"cached": 0, "ran": 4, "failed": 0}
    study = load_study(out)
    assert set(study.metrics["method"]) == {"bbn", "lfme"}
    per_split = study.decompose(loss="squared").per_split
    assert set(per_split["method"]) == {"bbn", "lfme"}
    assert np.allclose(per_split["error"], per_split["bias"] + per_split["variance"], equal_nan=True)
    assert per_split["error"].notna().any()
