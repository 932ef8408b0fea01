import json

import numpy as np
import pandas as pd
import pytest

import fake_runner
from bvkit.data.subsets import load_subsets
from bvkit.errors import BvkitError
from bvkit.study import load_spec, load_study, plan_runs, run_study
from bvkit.study import backends, execution, planning, store
from bvkit.study.status import status_table
from bvkit.study.spec import parse_spec


class Counting:
    """The fake trainer, counting its calls (in this process: jobs=1 runs in-process)."""

    def __init__(self):
        self.calls = []

    def __call__(self, method, dataset, out, **kwargs):
        self.calls.append((method, kwargs["seed"], kwargs["train_indices"].copy()))
        return fake_runner.train(method, dataset, out, **kwargs)


def quiet(message):
    pass


@pytest.fixture
def counting():
    return Counting()


def test_study_outputs_follow_the_layout(spec_file, tmp_path, counting):
    out = tmp_path / "study"
    counts = run_study(spec_file, out, run_function=counting, log=quiet)
    assert counts == {"cached": 0, "ran": 6, "failed": 0}
    assert (out / "spec.toml").read_text() == spec_file.read_text()
    subsets = load_subsets(out / "subsets.npz")
    assert len(subsets) == 3 and all(s.dtype == np.int64 for s in subsets)
    # run d trains on subset d with model seed d
    for method, seed, indices in counting.calls:
        assert np.array_equal(indices, subsets[seed])
    data = fake_runner.load_data("synthetic-lt", 10.0, "exp", None)
    for name in ("CE", "RIDE-2"):
        with np.load(out / "predictions" / f"{name}.npz") as pred:
            assert pred["logits"].shape == (3, len(data.test.labels), len(data.class_names))
            assert np.array_equal(pred["labels"], data.test.labels)
            assert np.array_equal(pred["train_counts"], data.counts)
            assert list(pred["class_names"]) == list(data.class_names)
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == list(store.METRIC_COLUMNS)
    assert len(metrics) == 6 and set(metrics["status"]) == {"done"}
    assert metrics.groupby("method")["subset"].apply(list).to_dict() == {"CE": [0, 1, 2], "RIDE-2": [0, 1, 2]}
    assert metrics["mflops"].eq(1.5).all() and metrics["all"].between(0, 1).all()
    usage = pd.read_csv(out / "expert_usage.csv")
    assert set(usage["method"]) == {"RIDE-2"} and set(usage["split"]) == {"all", "many", "few"}
    assert np.allclose(usage.groupby(["subset", "split"])["share"].sum(), 1.0)
    for run_id in metrics["run_id"]:
        info = json.loads((out / "runs" / run_id / "run.json").read_text())
        assert info["run_id"] == run_id and (out / "runs" / run_id / "checkpoint.pt").is_file()


def test_subset_order_of_gathered_logits(spec_file, tmp_path, counting):
    out = tmp_path / "study"
    run_study(spec_file, out, run_function=counting, log=quiet)
    study = load_study(out)
    for _, row in study.metrics.iterrows():
        with np.load(out / "runs" / row["run_id"] / "predictions.npz") as run:
            assert np.array_equal(study.predictions[row["method"]]["logits"][row["subset"]], run["logits"][0])


def test_rerun_trains_nothing(spec_file, tmp_path, counting):
    out = tmp_path / "study"
    run_study(spec_file, out, run_function=counting, log=quiet)
    assert len(counting.calls) == 6
    before = (out / "predictions" / "CE.npz").read_bytes()
    counts = run_study(spec_file, out, run_function=counting, log=quiet)
    assert len(counting.calls) == 6 and counts == {"cached": 6, "ran": 0, "failed": 0}
    assert (out / "predictions" / "CE.npz").read_bytes() == before  # gather is idempotent


def test_changing_one_method_retrains_only_that_method(spec_file, tmp_path, counting):
    out = tmp_path / "study"
    run_study(spec_file, out, run_function=counting, log=quiet)
    changed = spec_file.read_text().replace("num_experts = 2", "num_experts = 3")
    spec_file.write_text(changed)
    run_study(spec_file, out, run_function=counting, log=quiet)
    assert [c[0] for c in counting.calls[6:]] == ["ride"] * 3
    assert (out / "spec.toml").read_text() == changed


def test_run_ids_are_content_addressed(spec_file):
    spec = load_spec(spec_file)
    subsets = [np.arange(10), np.arange(1, 11), np.arange(2, 12)]
    ids = [t.run_id for t in plan_runs(spec, subsets)]
    assert len(set(ids)) == 6 and ids == [t.run_id for t in plan_runs(spec, subsets)]
    text = spec_file.read_text()
    # what does not change the model does not change the id: device, label, data root
    same = parse_spec(text.replace('device = "cpu"', 'device = "cuda"').replace('"CE"', '"Baseline"')
                      .replace("imbalance = 10.0", 'imbalance = 10.0\nroot = "/elsewhere"'))
    assert [t.run_id for t in plan_runs(same, subsets)] == ids
    for edit in [("epochs = 2", "epochs = 3"), ("imbalance = 10.0", "imbalance = 20.0"),
                 ("num_experts = 2", "num_experts = 4"), ("seed = 0\n\n[train]", "seed = 0\n\n[train]\nseed = 5")]:
        other = [t.run_id for t in plan_runs(parse_spec(text.replace(*edit)), subsets)]
        assert other != ids and len(set(other) & set(ids)) <= 3, edit
    moved = [t.run_id for t in plan_runs(spec, [np.arange(10), np.arange(1, 11), np.arange(3, 13)])]
    assert moved[:4] == ids[:4] and moved[4:] != ids[4:]


def test_failed_runs_are_recorded_and_retried(spec_file, tmp_path, monkeypatch, counting):
    out = tmp_path / "study"
    monkeypatch.setenv("FAKE_FAIL", "ride")
    counts = run_study(spec_file, out, run_function=counting, log=quiet)
    assert counts == {"cached": 0, "ran": 3, "failed": 3}
    metrics = pd.read_csv(out / "metrics.csv")
    failed = metrics[metrics["status"] == "failed"]
    assert list(failed["method"]) == ["RIDE-2"] * 3
    for run_id in failed["run_id"]:
        line = (out / "runs" / f"{run_id}.failed").read_text()
        assert line == "RuntimeError: ride diverged loss is nan\n"
        assert not (out / "runs" / run_id).exists()
    assert not (out / "predictions" / "RIDE-2.npz").exists() and (out / "predictions" / "CE.npz").exists()
    table = status_table(out)
    assert "6 runs: 3 done, 3 failed" in table and "ride diverged" in table
    monkeypatch.delenv("FAKE_FAIL")
    counts = run_study(spec_file, out, run_function=counting, log=quiet)
    assert counts == {"cached": 3, "ran": 3, "failed": 0}
    assert not list((out / "runs").glob("*.failed")) and (out / "predictions" / "RIDE-2.npz").exists()


def test_leftovers_are_cleaned_and_stale_outputs_dropped(spec_file, tmp_path, counting):
    out = tmp_path / "study"
    run_study(spec_file, out, run_function=counting, log=quiet)
    run_id = pd.read_csv(out / "metrics.csv")["run_id"][0]
    leftover = out / "runs" / f"{run_id}{store.TMP_MARK}otherhost-123-abcd"
    leftover.mkdir()
    (leftover / "checkpoint.pt").write_bytes(b"half")
    half_written = out / "predictions" / f"CE.npz{store.TMP_MARK}h-1-x"
    half_written.write_bytes(b"half")
    their_half_written = out / "predictions" / ".CE.npz.k2j3.tmp"
    their_half_written.write_bytes(b"half")
    (out / "predictions" / "Old.npz").write_bytes(b"a method no longer in the spec")
    run_study(spec_file, out, run_function=counting, log=quiet)
    assert not leftover.exists() and not half_written.exists() and not their_half_written.exists()
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["CE.npz", "RIDE-2.npz"]
    assert len(counting.calls) == 6


def test_a_resumed_run_directory_keeps_no_half_written_file(tmp_path):
    (tmp_path / "runs").mkdir()
    cut = store.temp_name(store.run_dir(tmp_path, "ce-1"))
    cut.mkdir()
    (cut / "checkpoint.pt").write_bytes(b"epoch 3")
    half = store.temp_name(cut / "checkpoint.pt")  # the atomic write of epoch 4, cut short
    half.write_bytes(b"half")
    assert store.clean_run_leftovers(tmp_path, "ce-1") == cut
    assert (cut / "checkpoint.pt").read_bytes() == b"epoch 3" and not half.exists()


def test_the_run_function_is_chosen_in_one_place(monkeypatch):
    monkeypatch.delenv(execution.RUNNER_ENV, raising=False)
    assert execution.select_run_function() == execution.DEFAULT_RUN_FUNCTION
    monkeypatch.setenv(execution.RUNNER_ENV, "fake_runner:train")
    assert execution.select_run_function() == "fake_runner:train"
    assert execution.resolve_run_function() is fake_runner.train
    assert execution.select_run_function(quiet) is quiet and execution.resolve_run_function(quiet) is quiet


def test_leftovers_of_a_live_run_are_kept(tmp_path):
    (tmp_path / "runs").mkdir()
    live = tmp_path / "runs" / f"ce-1{store.TMP_MARK}h-1-x"
    live.mkdir()
    with store.file_lock(store.run_lock_path(tmp_path, "ce-1")):
        assert store.clean_leftovers(tmp_path) == [] and live.exists()
        assert store.run_state(tmp_path, "ce-1") == ("running", "")
    assert store.clean_leftovers(tmp_path) == [live] and not live.exists()
    assert store.run_state(tmp_path, "ce-1") == ("pending", "")


def test_runs_are_spread_over_gpus(spec_file, monkeypatch):
    monkeypatch.setattr(planning, "gpu_count", lambda: 2)
    spec = parse_spec(spec_file.read_text().replace('device = "cpu"', 'device = "auto"'))
    tasks = planning.assign_devices(plan_runs(spec, [np.arange(5)] * 3))
    assert [t.kwargs["device"] for t in tasks] == ["cuda:0", "cuda:1"] * 3
    pinned = planning.assign_devices(plan_runs(load_spec(spec_file), [np.arange(5)] * 3))
    assert {t.kwargs["device"] for t in pinned} == {"cpu"}


def test_status_and_load_study(spec_file, tmp_path, counting):
    out = tmp_path / "study"
    with pytest.raises(BvkitError, match="not a study directory"):
        status_table(out)
    run_study(spec_file, out, run_function=counting, log=quiet)
    table = status_table(out)
    assert table.splitlines()[0] == "tiny: 6 runs: 6 done"
    assert table.count(" done ") == 6
    study = load_study(out)
    assert study.methods == ["CE", "RIDE-2"] and len(study.metrics) == 6
    assert study.predictions["CE"]["logits"].shape[0] == 3
    accuracy = study.accuracy()
    assert list(accuracy.index) == ["CE", "RIDE-2"] and ("all", "mean") in accuracy.columns
    with pytest.raises(BvkitError, match="no such study directory"):
        load_study(tmp_path / "nothing")


def test_study_decompose_calls_bvkit_decompose(spec_file, tmp_path, counting):
    from bvkit.decomposition import decompose

    out = tmp_path / "study"
    run_study(spec_file, out, run_function=counting, log=quiet)
    result = load_study(out).decompose(loss="squared")
    assert result.methods == ["CE", "RIDE-2"]
    arrays = load_study(out).predictions["CE"]
    direct = decompose(labels=arrays["labels"], logits=arrays["logits"], train_counts=arrays["train_counts"],
                       loss="squared")
    ours = result.per_split[result.per_split["method"] == "CE"]
    assert np.allclose(ours["bias"].to_numpy(), direct.per_split["bias"].to_numpy(), equal_nan=True)
    assert np.allclose(ours["error"], ours["bias"] + ours["variance"], equal_nan=True)


def test_bad_arguments(spec_file, tmp_path):
    with pytest.raises(BvkitError, match="--jobs must be >= 1"):
        run_study(spec_file, tmp_path / "s", jobs=0, log=quiet)
    with pytest.raises(BvkitError, match="--jobs must be a positive integer or 'auto', got 'many'"):
        run_study(spec_file, tmp_path / "s", jobs="many", log=quiet)
    with pytest.raises(BvkitError, match="module:function"):
        run_study(spec_file, tmp_path / "s", run_function="fake_runner.train", log=quiet)
    with pytest.raises(BvkitError, match="unknown backend 'mpi'"):
        list(backends.dispatch([(print, ())], backend="mpi"))


def test_ray_backend_needs_ray(spec_file, tmp_path, counting):
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(BvkitError, match="the ray backend needs `pip install ray`"):
            run_study(spec_file, tmp_path / "s", backend="ray", run_function=counting, log=quiet)
    else:
        pytest.skip("ray is installed")


def test_identical_methods_share_their_runs(spec_file, tmp_path, counting):
    text = spec_file.read_text() + '\n[[methods]]\nname = "CE-again"\nmethod = "ce"\n'
    spec_file.write_text(text)
    out = tmp_path / "study"
    counts = run_study(spec_file, out, run_function=counting, log=quiet)
    assert counts["ran"] == 6 and len(counting.calls) == 6
    study = load_study(out)
    assert np.array_equal(study.predictions["CE"]["logits"], study.predictions["CE-again"]["logits"])
    assert len(study.metrics) == 9


def test_status_shows_the_epoch_of_a_run_in_flight(spec_file, tmp_path, counting):
    import shutil

    from bvkit.train.progress import write_progress

    out = tmp_path / "study"
    run_study(spec_file, out, run_function=counting, log=quiet)
    run_id = load_study(out).metrics["run_id"][0]
    shutil.rmtree(store.run_dir(out, run_id))  # as if it had not finished: a process trains it now
    live = store.temp_name(store.run_dir(out, run_id))
    live.mkdir()
    with store.file_lock(store.run_lock_path(out, run_id)):
        assert "running starting" in " ".join(status_table(out).split())
        write_progress(live, {"stage": "stage1", "epoch": 3, "loss": 1.0}, epochs=10)
        table = status_table(out)
    assert table.splitlines()[0] == "tiny: 6 runs: 5 done, 1 running"
    line = next(line for line in table.splitlines() if run_id in line)
    assert " ".join(line.split()[3:6]) == "running stage1 3/10"


def test_status_of_a_study_with_no_run_finished_yet(spec_file, tmp_path, counting):
    """The first hours of a long study: every run pending or running, no result column yet."""
    import shutil

    out = tmp_path / "study"
    run_study(spec_file, out, run_function=counting, log=quiet)
    for run in load_study(out).metrics["run_id"]:
        shutil.rmtree(store.run_dir(out, run))
    table = status_table(out)
    assert table.splitlines()[0] == "tiny: 6 runs: 6 pending"
    assert all(len(line.split()) >= 5 for line in table.splitlines()[2:])


def test_a_run_trains_its_planned_recipe_on_the_long_tailed_set_of_the_specs_data_seed(spec_file, tmp_path,
                                                                                        monkeypatch):
    """The recipe resolved when the spec was read is what the trainer gets (not resolved again),
    and the long-tailed set a worker loads is drawn with the spec's data seed, as the subsets were
    (before, the workers drew it with seed 0 whatever the spec said)."""
    from bvkit.train import run as run_module

    seen = []

    class Result:
        metrics = {}

    monkeypatch.setattr(run_module, "train", lambda method, data, **kwargs: seen.append((method, data, kwargs)) or Result())
    text = spec_file.read_text().replace("[data]\n", "[data]\nseed = 3\n")
    assert text != spec_file.read_text()
    spec = parse_spec(text)
    data, subsets = planning.make_subsets(spec)
    assert data.seed == 3
    task = plan_runs(spec, subsets)[0]
    execution.train_subset(task.method, spec.data.dataset, tmp_path, train_indices=subsets[0], **task.kwargs)
    method, trained_on, kwargs = seen[0]
    assert method is task.recipe and not set(kwargs) & set(task.overrides)  # no second resolution
    assert trained_on.seed == 3 and np.array_equal(trained_on.train_indices, subsets[0])
    assert np.array_equal(trained_on.counts, data.counts)
    execution._long_tailed.cache_clear()


def test_jobs_auto_is_one_worker_per_gpu_in_use_else_per_core(monkeypatch):
    monkeypatch.setattr(backends.os, "cpu_count", lambda: 6)
    assert backends.resolve_jobs("auto", ["cpu", "cpu"]) == 6
    assert backends.resolve_jobs("auto", []) == 6
    assert backends.resolve_jobs("auto", ["cuda:0", "cuda:1", "cuda:0"]) == 2
    assert backends.resolve_jobs("3", ["cuda:0"]) == 3 and backends.resolve_jobs(1, ["cpu"]) == 1
    monkeypatch.setattr(backends.os, "cpu_count", lambda: None)
    assert backends.resolve_jobs("auto", ["cpu"]) == 1


def test_jobs_auto_starts_a_worker_per_core(spec_file, tmp_path, monkeypatch, counting):
    seen = []
    monkeypatch.setattr(backends.os, "cpu_count", lambda: 3)
    real = backends.dispatch
    monkeypatch.setattr("bvkit.study.runner.dispatch",  # records the worker count, then trains in this process
                        lambda calls, **kw: (seen.append(kw["jobs"]), real(calls, **{**kw, "jobs": 1}))[1])
    run_study(spec_file, tmp_path / "s", jobs="auto", run_function=counting, log=quiet)
    assert seen and set(seen) == {3}
