"""A study whose RIDE arms wrote expert logits: it decomposes through every reader, draws
experts.png and gets verdicts on the two expert claims (docs/claims.md, claims 7 and 8)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bvkit import cli
from bvkit.decomposition import EXPERT_COLUMNS
from bvkit.errors import BvkitError
from bvkit.report import claims_table, study_frames
from bvkit.report.assembly import make_figures
from bvkit.report.claims import FAILS, HOLDS, UNTESTABLE
from bvkit.report.figures import plot_experts
from bvkit.study import load_study, run_study

SPEC = """\
name = "experts"
[data]
dataset = "synthetic-lt"
imbalance = 10.0
n_max = 40
[subsets]
scheme = "redraw"
count = 3
[train]
epochs = 1
device = "cpu"
[[methods]]
name = "ce"
method = "ce"
[[methods]]
name = "ride"
method = "ride"
[[methods]]
name = "ride-collab"
method = "ride"
options = { "loss_kwargs.collaborative" = true }
[[methods]]
name = "ride-nodiv"
method = "ride"
options = { "loss_kwargs.diversity_weight" = 0.0 }
"""
N_EXPERTS = 3


def fake_train(method, dataset, out, *, train_indices, seed=0, overrides=None, recipe=None, imbalance=100.0,
               profile="exp", data_root=None, n_max=None, **_):
    """A numpy stand-in for RIDE with 3 experts: the collaborative arm's experts nearly agree
    (low diversity), the arm without a diversity term has a weaker signal (more bias)."""
    from bvkit.data import make_long_tailed

    overrides = overrides or {}
    data = make_long_tailed(dataset, imbalance=imbalance, profile=profile, root=data_root, n_max=n_max)
    labels = np.asarray(data.test.labels, dtype=np.int64)
    n_classes = len(data.class_names)
    counts = np.bincount(data.pool.labels[train_indices], minlength=n_classes)
    rng = np.random.default_rng([seed, len(train_indices), sum(map(ord, str(sorted(overrides))))])
    signal = 0.4 if overrides.get("loss_kwargs.diversity_weight") == 0 else 1.5
    base = 0.5 * np.log(counts + 1.0) + rng.normal(size=(len(labels), n_classes))
    base[np.arange(len(labels)), labels] += signal
    arrays = {"labels": labels, "train_counts": np.asarray(data.counts),
              "class_names": np.asarray(data.class_names, dtype=str)}
    if method == "ride":
        spread = 0.1 if overrides.get("loss_kwargs.collaborative") else 1.2
        experts = base + spread * rng.normal(size=(N_EXPERTS, *base.shape))
        arrays.update(logits=experts.mean(0)[None].astype(np.float32),
                      expert_logits=experts[None].astype(np.float32))
    else:
        arrays["logits"] = base[None].astype(np.float32)
    np.savez(Path(out) / "predictions.npz", **arrays)
    accuracy = float((base.argmax(1) == labels).mean())
    metrics = {"method": method, "seed": seed, "accuracy": dict.fromkeys(("all", "many", "medium", "few"), accuracy),
               "mflops": 1.0, "seconds": 0.01, "epochs": 1}
    (Path(out) / "metrics.json").write_text(json.dumps(metrics))
    return metrics


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    spec = root / "spec.toml"
    spec.write_text(SPEC)
    out = root / "study"
    assert run_study(spec, out, run_function=fake_train, log=None)["failed"] == 0
    return out


@pytest.fixture(scope="module")
def frames(study_dir):
    return study_frames(study_dir, bootstrap=200, seed=1, many=25, few=8)  # counts 40..4: 3 splits


def test_a_study_with_expert_logits_decomposes(study_dir):
    study = load_study(study_dir)
    assert study.predictions["ride"]["expert_logits"].shape[:2] == (3, N_EXPERTS)
    result = study.decompose(loss="all")
    experts = result.experts
    assert experts.methods == ["ride", "ride-collab", "ride-nodiv"]  # ce has no experts
    assert set(experts.per_split["loss"]) == {"squared", "cross-entropy"}
    present = experts.per_split[experts.per_split["n_classes"] > 0]
    np.testing.assert_allclose(present["ensemble_loss"], present["average_bias"]
                               + present["average_variance"] - present["diversity"], atol=1e-12)
    div = present[present["loss"] == "cross-entropy"].set_index(["method", "split"])["diversity"]
    assert (div["ride"] > 5 * div["ride-collab"]).all()  # what the fake trainer built in


def test_decompose_command_reads_the_study(study_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("bvkit.decomposition.commands",))
    out = tmp_path / "decomposition"
    assert cli.main(["decompose", str(study_dir), "--loss", "cross-entropy", "--out", str(out)]) == 0
    capsys.readouterr()
    per_split = pd.read_csv(out / "experts_per_split.csv")
    assert set(per_split["method"]) == {"ride", "ride-collab", "ride-nodiv"}
    # D >= 3: the population estimator, its corrected terms and their plug-in twins
    assert list(per_split.columns) == ["method", "loss", "split", "n_classes", "n_test",
                                       *EXPERT_COLUMNS, "average_bias_plugin",
                                       "average_variance_plugin"]


def test_experts_figure_draws_the_study_frames(frames):
    assert frames.experts.losses == ["cross-entropy"]  # RIDE's own combiner, whatever --loss
    made, notes = make_figures(frames, bootstrap=50, seed=1, window=1)
    assert not [n for n in notes if n.startswith("experts")]
    fig = made["experts"]
    bars = {p.get_gid(): p.get_height() for ax in fig.axes for p in ax.patches if p.get_gid()}
    errors = {line.get_gid() for ax in fig.axes for coll in ax.collections
              for line in [coll] if coll.get_gid()}
    rows = frames.experts.per_split.set_index(["method", "split"])
    for method in ("ride", "ride-collab", "ride-nodiv"):
        for split in ("many", "medium", "few", "all"):
            if rows.loc[(method, split), "n_classes"] == 0:
                assert f"bar:diversity:{method}:{split}" not in bars
                continue
            for column in EXPERT_COLUMNS:
                assert bars[f"bar:{column}:{method}:{split}"] == pytest.approx(rows.loc[(method, split), column])
                assert f"err:{column}:{method}:{split}" in errors
    assert "ce" not in {gid.split(":")[2] for gid in bars}


def test_plot_experts_needs_its_columns():
    with pytest.raises(BvkitError, match="lacks column"):
        plot_experts(pd.DataFrame({"method": ["ride"], "split": ["all"], "diversity": [0.1]}))


def test_the_expert_claims_find_the_arms_and_get_verdicts(frames):
    table = claims_table(frames, bootstrap=200, seed=1)
    assert len(table[table["claim"] == 7]) == len(table[table["claim"] == 8]) == 3  # every split
    verdict = table.groupby("claim")["verdict"].first()
    assert verdict[7] == HOLDS and verdict[8] == HOLDS  # what the fake trainer built in
    seven = table[table["claim"] == 7]
    assert set(zip(seven["method"], seven["versus"])) == {("ride", "ride-collab")}
    assert (seven["metric"] == "diversity").all() and (seven["lo"] > 0).all()
    eight = table[table["claim"] == 8]
    assert set(zip(eight["method"], eight["versus"])) == {("ride", "ride-nodiv")}
    assert (eight["metric"] == "bias").all() and (eight["hi"] < 0).all()
    # the estimates are the differences of the decompositions' split means
    rows = frames.experts.per_split.set_index(["method", "split"])["diversity"]
    for row in seven.itertuples():
        split = row.quantity.split("-")[0]
        assert row.estimate == pytest.approx(rows["ride", split] - rows["ride-collab", split])
    # swapped arms: the same intervals, on the other side
    swapped = claims_table(frames, arms={"collaborative": [("ride-collab", "ride")],
                                         "no_diversity": [("ride-nodiv", "ride")]},
                           bootstrap=200, seed=1)
    assert swapped.groupby("claim")["verdict"].first()[[7, 8]].tolist() == [FAILS, FAILS]
    np.testing.assert_allclose(swapped.loc[swapped["claim"] == 7, "hi"].to_numpy(),
                               -seven["lo"].to_numpy(), rtol=1e-9)


def test_expert_claims_without_arms_are_untestable(frames):
    table = claims_table(frames, arms={"collaborative": [], "no_diversity": []}, bootstrap=50)
    for claim in (7, 8):
        rows = table[table["claim"] == claim]
        assert (rows["verdict"] == UNTESTABLE).all() and rows["quantity"].iloc[0].startswith("no pair")
    no_experts = claims_table(frames, arms={"collaborative": [("ride", "ce")]}, bootstrap=50)
    assert (no_experts.loc[no_experts["claim"] == 7, "result"] == UNTESTABLE).all()
    with pytest.raises(BvkitError, match="unknown method 'bbn'"):
        claims_table(frames, arms={"no_diversity": [("ride", "bbn")]}, bootstrap=50)
    with pytest.raises(BvkitError, match="unknown arms"):
        claims_table(frames, arms={"pairwise": []}, bootstrap=50)
