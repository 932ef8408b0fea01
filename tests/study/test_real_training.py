"""The study runner with the real trainer (bvkit.train) on a tiny synthetic-lt study."""

import json
from pathlib import Path

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
    experts = study.predictions["ride-2"]["expert_logits"]  # gathered (D, M, N, C); ce has none
    assert experts.shape == (2, 2, *study.predictions["ride-2"]["logits"].shape[1:])
    np.testing.assert_allclose(np.asarray(experts).mean(1), study.predictions["ride-2"]["logits"], rtol=1e-5, atol=1e-5)
    assert "expert_logits" not in study.predictions["ce"]
    assert metrics["val_check_z"].abs().lt(4).all() and metrics["check_accuracy"].between(0, 1).all()
    # one truth for the shot splits: metrics.csv states the thresholds its accuracies were split at, and
    # Study.accuracy agrees with the decomposition's per-model accuracy at those and at any others
    assert (metrics["many_threshold"] == 100).all() and (metrics["few_threshold"] == 20).all()
    for many, few in ((100, 20), (20, 8)):
        per_model = study.decompose(loss="squared", many=many, few=few).per_model
        expected = per_model.groupby(["method", "split"])["accuracy"].mean().unstack()
        found = study.accuracy(many=many, few=few)
        for split in ("all", "many", "medium", "few"):
            np.testing.assert_allclose(found[(split, "mean")].to_numpy(float),
                                       expected.loc[found.index, split].to_numpy(float), atol=1e-12)
    assert study.accuracy(20, 8)[("many", "mean")].notna().all()  # some class has more than 20 images
    assert study.accuracy()[("many", "mean")].isna().all()  # none has more than 100
    # the snapshots along training: one epoch here, the final model's, so its decomposition is the study's
    snapshots = study.snapshots
    assert set(snapshots) == {"ce", "ride-2"} and snapshots["ce"]["epochs"].tolist() == [1]
    assert snapshots["ride-2"]["expert_logits"].shape == (1, 2, 2, *study.predictions["ride-2"]["logits"].shape[1:])
    along = study.decompose_along_training(loss="squared").set_index(["method", "split"])
    final = study.decompose(loss="squared").per_split.set_index(["method", "split"])
    assert (along["epoch"] == 1).all()
    np.testing.assert_allclose(along.loc[final.index, ["error", "bias", "variance"]],
                               final[["error", "bias", "variance"]], rtol=0.02, atol=1e-3)
    # the report draws them: one line per (term, split, method), its points the frame's values
    from bvkit.report import study_frames
    from bvkit.report.figures import plot_along_training

    frames = study_frames(out, bootstrap=0)
    fig = plot_along_training(frames.along_training)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.lines if line.get_gid()}
    for (method, split), row in along.iterrows():
        for term in ("bias", "variance"):
            line = lines[f"along:{term}:{split}:{method}"]
            assert list(line.get_xdata()) == [1] and line.get_ydata()[0] == pytest.approx(row[term], nan_ok=True)
    # the runs trained on their own bootstrap subset: the histories differ
    histories = [pd.read_csv(out / "runs" / r / "history.csv") for r in metrics["run_id"][metrics["method"] == "ce"]]
    assert not histories[0]["loss"].equals(histories[1]["loss"])
    assert run_study(spec, out, log=None) == {"cached": 4, "ran": 0, "failed": 0}


def test_the_papers_other_baselines_run_as_study_methods(tmp_path, monkeypatch):
    """BBN and LFME train through their own procedures inside a study, each run on its own
    subset, and their predictions decompose like any other method's."""
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


SHARING = SPEC.partition("[[methods]]")[0] + """\
[[methods]]
name = "crt"
method = "crt"
options = { "crt.epochs" = 1 }
[[methods]]
name = "ce"
method = "ce"
[[methods]]
name = "tau-norm"
method = "tau-norm"
"""


@pytest.fixture
def counted(monkeypatch):
    """Every stage one trained (a list, one entry each) and the model of every run, by run id."""
    from bvkit.study import store
    from bvkit.train import run as run_module

    monkeypatch.delenv("BVKIT_STUDY_RUNNER", raising=False)
    backbones, models = [], {}
    plain_stage_one, train = run_module._plain_stage_one, run_module.train

    def counting_stage_one(*args, **kwargs):
        backbones.append(args[1].name)
        return plain_stage_one(*args, **kwargs)

    def recording(*args, **kwargs):
        result = train(*args, **kwargs)
        models[Path(kwargs["out"]).name.split(store.TMP_MARK)[0]] = result.model
        return result

    monkeypatch.setattr(run_module, "_plain_stage_one", counting_stage_one)
    monkeypatch.setattr(run_module, "train", recording)
    return backbones, models


def backbone(model) -> dict:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}


def test_decoupled_runs_train_on_the_ce_backbone(tmp_path, counted):
    import torch

    from bvkit.study.execution import train_subset
    from bvkit.study.planning import planned_runs
    from bvkit.train.checkpoint import load_checkpoint

    backbones, models = counted
    spec = tmp_path / "spec.toml"
    spec.write_text(SHARING)
    out = tmp_path / "study"
    assert run_study(spec, out, log=None) == {"cached": 0, "ran": 6, "failed": 0}
    assert backbones == ["ce", "ce"]  # one stage one per subset, trained by the ce runs
    metrics = pd.read_csv(out / "metrics.csv").fillna({"stage_one": ""})
    rows = {(r.method, r.subset): r for r in metrics.itertuples()}
    probe = torch.rand(8, 3, 32, 32)
    for d in (0, 1):
        ce = rows["ce", d].run_id
        assert rows["ce", d].stage_one == "" and rows["crt", d].stage_one == rows["tau-norm", d].stage_one == ce
        for label in ("crt", "tau-norm"):
            model = models[rows[label, d].run_id].eval()
            assert backbone(model).keys() == backbone(models[ce]).keys()
            assert all(torch.equal(v, backbone(models[ce])[k]) for k, v in backbone(model).items())
            assert torch.equal(model.forward_features(probe), models[ce].eval().forward_features(probe))
            assert not (out / "runs" / rows[label, d].run_id / "checkpoint.pt").exists()
        kept = load_checkpoint(out / "runs" / ce / "checkpoint.pt")  # the backbone, weights only
        assert "optimizer" not in kept and "history" not in kept and kept["stage"] == 0
        assert all(torch.equal(v, models[ce].state_dict()[k]) for k, v in kept["model"].items())
    assert (metrics["epochs"] == 1).all() and metrics["val_accuracy"].between(0, 1).all()
    assert metrics.loc[metrics["method"] != "tau-norm", "train_accuracy"].between(0, 1).all()
    assert metrics.loc[metrics["method"] == "tau-norm", "train_accuracy"].isna().all()  # trains no epoch
    assert set(load_study(out).snapshots) == {"ce"}  # cRT and tau-norm train on ce's stage one: no snapshots

    # a shared crt run computes what crt trained alone computes
    _, tasks = planned_runs(out)
    task = next(t for t in tasks if t.label == "crt" and t.subset == 0)
    alone = train_subset("crt", "synthetic-lt", tmp_path / "alone", train_indices=load_study(out).subsets[0],
                         **task.kwargs)
    assert len(backbones) == 3 and alone["accuracy"] == json.loads((out / "runs" / task.run_id / "metrics.json").read_text())["accuracy"]
    with np.load(tmp_path / "alone" / "predictions.npz") as a, np.load(out / "runs" / task.run_id / "predictions.npz") as b:
        np.testing.assert_array_equal(a["logits"], b["logits"])


def test_an_interrupted_study_resumes_without_retraining_its_backbone(tmp_path, counted, monkeypatch, interrupt):
    interrupt_after_checkpoint = interrupt

    backbones, _ = counted
    spec = tmp_path / "spec.toml"
    spec.write_text(SHARING)
    out = tmp_path / "study"
    # Ctrl-C in subset 0's crt stage: that subset's ce run is done, nothing else
    interrupt_after_checkpoint(monkeypatch, lambda: run_study(spec, out, log=None),
                               stop=lambda content, count: content["stage_name"] == "crt")
    done = [p.parent for p in out.glob("runs/*/metrics.json")]
    assert [p.name.split("-")[0] for p in done] == ["ce"] and backbones == ["ce"]
    before = {p.name: p.stat().st_mtime_ns for p in done[0].iterdir()}
    assert run_study(spec, out, log=None) == {"cached": 1, "ran": 5, "failed": 0}
    assert backbones == ["ce", "ce"]  # the rerun trained subset 1's backbone only
    assert {p.name: p.stat().st_mtime_ns for p in done[0].iterdir()} == before
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["status"]) == {"done"}
    crt = metrics[metrics["method"] == "crt"].sort_values("subset")
    ce = metrics[metrics["method"] == "ce"].sort_values("subset")
    assert list(crt["stage_one"]) == list(ce["run_id"])


def test_tensorboard_in_a_spec_logs_every_run_and_keeps_the_run_ids(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing import event_accumulator as accumulator

    from bvkit.study.planning import plan_runs
    from bvkit.study.spec import load_spec

    monkeypatch.delenv("BVKIT_STUDY_RUNNER", raising=False)
    plain, logged = tmp_path / "plain.toml", tmp_path / "logged.toml"
    ce_only = SPEC.split('[[methods]]\nname = "ride-2"')[0]
    plain.write_text(ce_only)
    logged.write_text(ce_only.replace("[train]\n", "[train]\ntensorboard = true\n"))
    subsets = [np.arange(10), np.arange(5, 20)]
    assert [t.run_id for t in plan_runs(load_spec(plain), subsets)] == \
        [t.run_id for t in plan_runs(load_spec(logged), subsets)]  # logging is not part of what a run is
    out = tmp_path / "study"
    assert run_study(logged, out, log=None) == {"cached": 0, "ran": 2, "failed": 0}
    for run in sorted(path for path in (out / "runs").iterdir() if path.is_dir()):
        reader = accumulator.EventAccumulator(str(run / "tensorboard"))
        reader.Reload()
        history = pd.read_csv(run / "history.csv")
        losses = [e.value for e in reader.Scalars("stage1/loss")]
        np.testing.assert_allclose(losses, history.loc[history["stage"] == "stage1", "loss"], rtol=1e-6)
    # the same spec without it finds those runs done
    assert run_study(plain, out, log=None) == {"cached": 2, "ran": 0, "failed": 0}


def test_a_run_interrupted_in_flight_resumes_from_its_last_epoch(tmp_path, counted, monkeypatch, interrupt):
    """Ctrl-C after epoch 2 of 4 of a study's first run: its temporary directory keeps that
    checkpoint, the rerun continues it from epoch 3 (its epochs 1-2 are not trained again) and
    both runs end with the same test logits, snapshots and history as the uninterrupted study."""
    from bvkit.study import store
    from bvkit.train import loop

    _, models = counted
    ce_only = SPEC.split('[[methods]]\nname = "ride-2"')[0].replace("epochs = 1", "epochs = 4")
    spec = tmp_path / "spec.toml"
    spec.write_text(ce_only)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_study(spec, whole, log=None) == {"cached": 0, "ran": 2, "failed": 0}
    interrupt(monkeypatch, lambda: run_study(spec, cut, log=None), stop=lambda content, count: content["epoch"] == 2)
    (leftover,) = (cut / "runs").glob(f"*{store.TMP_MARK}*")
    assert (leftover / "checkpoint.pt").is_file()
    trained = []
    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", lambda *a, **k: (trained.append(1), real_step(*a, **k))[1])
    assert run_study(spec, cut, log=None) == {"cached": 0, "ran": 2, "failed": 0}
    assert not leftover.exists() and not list((cut / "runs").glob(f"*{store.TMP_MARK}*"))
    steps_per_epoch = len(trained) // 6
    assert steps_per_epoch > 0 and len(trained) == 6 * steps_per_epoch  # epochs 3-4 of run 1, 1-4 of run 2
    columns = ["stage", "epoch", "loss", "accuracy", "lr", "val_accuracy", "test_accuracy"]
    for run_id in pd.read_csv(cut / "metrics.csv")["run_id"]:
        a, b = whole / "runs" / run_id, cut / "runs" / run_id
        for name in ("predictions.npz", "snapshots.npz", "heldout.npz"):
            with np.load(a / name) as x, np.load(b / name) as y:
                assert x.files == y.files
                for key in x.files:
                    np.testing.assert_array_equal(x[key], y[key])
        pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv")[columns],
                                      pd.read_csv(b / "history.csv")[columns])
