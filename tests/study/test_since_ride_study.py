"""A tiny real study of CE and the strong simple baselines since RIDE (issue 27) on synthetic-lt:
logit-adjust-posthoc reuses the CE runs' stage one, SADE writes its experts' logits."""

import json

import numpy as np
import pandas as pd
import pytest

from test_real_training import SPEC as TINY_SPEC  # the tiny study's data and training settings

from bvkit.study import load_study, run_study

pytestmark = pytest.mark.slow

SPEC = TINY_SPEC.partition("[[methods]]")[0].replace('name = "real-tiny"', 'name = "since-ride-tiny"') + """\
[[methods]]
name = "logit-adjust-posthoc"
method = "logit-adjust-posthoc"
[[methods]]
name = "ce"
method = "ce"
[[methods]]
name = "logit-adjust"
method = "logit-adjust"
[[methods]]
name = "weight-balancing"
method = "weight-balancing"
options = { "maxnorm.epochs" = 1 }
[[methods]]
name = "sade"
method = "sade"
options = { "sade-tta.epochs" = 1 }
"""


def test_ce_and_the_four_baselines_run_as_a_study_sharing_ces_stage_one(tmp_path, monkeypatch):
    from bvkit.train import run as run_module

    monkeypatch.delenv("BVKIT_STUDY_RUNNER", raising=False)
    backbones = []
    plain_stage_one = run_module._plain_stage_one

    def counting_stage_one(*args, **kwargs):
        backbones.append(args[1].name)
        return plain_stage_one(*args, **kwargs)

    monkeypatch.setattr(run_module, "_plain_stage_one", counting_stage_one)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "study"
    assert run_study(spec, out, log=None) == {"cached": 0, "ran": 10, "failed": 0}
    # one stage one per subset for every method but the post-hoc adjustment, which reuses ce's
    assert sorted(backbones) == sorted(["ce", "logit-adjust", "weight-balancing", "sade"] * 2)
    metrics = pd.read_csv(out / "metrics.csv").fillna({"stage_one": ""})
    assert set(metrics["status"]) == {"done"} and metrics["all"].between(0, 1).all()
    rows = {(r.method, r.subset): r for r in metrics.itertuples()}
    for d in (0, 1):
        assert rows["logit-adjust-posthoc", d].stage_one == rows["ce", d].run_id
        for own in ("ce", "logit-adjust", "weight-balancing", "sade"):
            assert rows[own, d].stage_one == ""
        posthoc = json.loads((out / "runs" / rows["logit-adjust-posthoc", d].run_id / "metrics.json").read_text())
        assert posthoc["tau"] in [row["tau"] for row in posthoc["tau_grid"]]
        sade = json.loads((out / "runs" / rows["sade", d].run_id / "metrics.json").read_text())
        assert len(sade["expert_weights"]) == 3 and sum(sade["expert_weights"]) == pytest.approx(1.0, abs=1e-6)
    study = load_study(out)
    experts = study.predictions["sade"]["expert_logits"]  # (D, M, N, C), like RIDE's
    assert experts.shape == (2, 3, *study.predictions["sade"]["logits"].shape[1:])
    assert "expert_logits" not in study.predictions["logit-adjust-posthoc"]
    # every method's predictions decompose (the models' own logits: SADE's are a weighted, not a
    # plain, mean of its experts)
    from bvkit import decompose

    for method, arrays in study.predictions.items():
        per_split = decompose(labels=arrays["labels"], logits=np.asarray(arrays["logits"]),
                              train_counts=arrays["train_counts"], loss="squared", method=method).per_split
        assert np.allclose(per_split["error"], per_split["bias"] + per_split["variance"], equal_nan=True)
        assert per_split["error"].notna().any()
    weights = np.array([json.loads((out / "runs" / rows["sade", d].run_id / "metrics.json").read_text())["expert_weights"]
                        for d in (0, 1)])
    np.testing.assert_allclose(np.einsum("dm,dmnc->dnc", weights, np.asarray(experts)),
                               study.predictions["sade"]["logits"], rtol=1e-4, atol=1e-4)
    assert run_study(spec, out, log=None) == {"cached": 10, "ran": 0, "failed": 0}
