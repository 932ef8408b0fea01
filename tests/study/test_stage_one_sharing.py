"""Stage-one sharing in the plan and the executor, with the fake trainer: which run trains a
backbone, which runs reuse it, run ids, run.json and metrics.csv, order and failures."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fake_runner
from bvkit.methods import get_method, register_method
from bvkit.study import plan_runs, planning, run_study, store
from bvkit.study.spec import parse_spec

SPEC = """\
name = "sharing"
[data]
dataset = "synthetic-lt"
imbalance = 10.0
[subsets]
scheme = "redraw"
count = 2
[train]
epochs = 2
device = "cpu"
"""


def methods(*entries: str) -> str:
    """``[[methods]]`` tables from "label=method" or "label=method:options"."""
    text = ""
    for entry in entries:
        label, _, rest = entry.partition("=")
        method, _, options = rest.partition(":")
        text += f'[[methods]]\nname = "{label}"\nmethod = "{method}"\n' + (f"options = {{ {options} }}\n" if options else "")
    return text


SUBSETS = [np.arange(10), np.arange(1, 11)]


class Calls:
    """The fake trainer, recording each call (jobs=1 runs in this process)."""

    def __init__(self):
        self.calls = []

    def __call__(self, method, dataset, out, **kwargs):
        stage_one = kwargs.get("stage_one")
        self.calls.append({"method": method, "out": str(out), "seed": kwargs["seed"], "stage_one": stage_one,
                           "stage_one_ready": stage_one is not None and Path(stage_one).is_file(),
                           "keep": kwargs.get("keep_stage_one")})
        return fake_runner.train(method, dataset, out, **kwargs)

    def run_ids(self):
        return [Path(c["out"]).name.split(store.TMP_MARK)[0] for c in self.calls]


def by_label(tasks):
    return {(t.label, t.subset): t for t in tasks}


def test_two_stage_runs_reuse_the_stage_one_with_the_same_recipe():
    spec = parse_spec(SPEC + methods("ce=ce", "crt=crt", "tau=tau-norm", "lws=lws", "ldam=ldam-drw",
                                     'ride3=ride:"model_kwargs.num_experts" = 3',
                                     'ea3=ride-ea:"model_kwargs.num_experts" = 3',
                                     'ea2=ride-ea:"model_kwargs.num_experts" = 2'))
    tasks = plan_runs(spec, SUBSETS)
    runs = by_label(tasks)
    for d in (0, 1):
        for label in ("crt", "tau", "lws"):
            assert runs[label, d].stage_one.run_id == runs["ce", d].run_id
        assert runs["ea3", d].stage_one.run_id == runs["ride3", d].run_id  # same experts: shared
        assert runs["ea2", d].stage_one is None  # no 2-expert RIDE in the study: trains its own
        for label in ("ce", "ride3", "ldam", "ea2"):
            assert runs[label, d].stage_one is None
        assert runs["ce", d].keeps_stage_one and runs["ride3", d].keeps_stage_one
        assert not any(runs[label, d].keeps_stage_one for label in ("ldam", "ea2", "crt", "tau", "lws", "ea3"))
    # subset-major, and within a subset the reusing runs after the runs they reuse
    assert [t.label for t in tasks[:8]] == ["ce", "ldam", "ride3", "ea2", "crt", "tau", "lws", "ea3"]
    assert [t.subset for t in tasks] == [0] * 8 + [1] * 8


def test_without_a_plain_method_the_first_two_stage_run_trains_the_backbone():
    spec = parse_spec(SPEC + methods("tau=tau-norm", "crt=crt", "lws=lws"))
    runs = by_label(plan_runs(spec, SUBSETS))
    for d in (0, 1):
        assert runs["tau", d].stage_one is None and runs["tau", d].keeps_stage_one
        assert runs["crt", d].stage_one.run_id == runs["lws", d].stage_one.run_id == runs["tau", d].run_id


def test_sharing_follows_the_stage_one_recipe_not_the_method_name():
    text = SPEC + methods("ce=ce", "crt=crt:weight_decay = 0.001", "lws=lws:weight_decay = 0.001",
                          'tau=tau-norm:"tau-norm.options.tau_grid" = [0.5, 1.0]')
    runs = by_label(plan_runs(parse_spec(text), SUBSETS))
    assert runs["tau", 0].stage_one.run_id == runs["ce", 0].run_id  # a second-stage setting: still shared
    assert runs["crt", 0].stage_one is None and runs["crt", 0].keeps_stage_one  # another weight decay
    assert runs["lws", 0].stage_one.run_id == runs["crt", 0].run_id


def test_a_changed_stage_one_recipe_changes_the_run_id():
    spec = parse_spec(SPEC + methods("ce=ce", "crt=crt"))
    before = by_label(plan_runs(spec, SUBSETS))
    original = get_method("crt")
    # the same spec (same method config), but the registered crt recipe trains another stage one
    register_method(replace(original, weight_decay=1e-3), overwrite=True)
    try:
        assert by_label(plan_runs(spec, SUBSETS)) == before  # a parsed spec holds its resolved recipes
        changed = by_label(plan_runs(parse_spec(SPEC + methods("ce=ce", "crt=crt")), SUBSETS))
    finally:
        register_method(original, overwrite=True)
    assert changed["ce", 0].run_id == before["ce", 0].run_id
    assert changed["crt", 0].run_id != before["crt", 0].run_id and changed["crt", 0].stage_one is None
    # a second-stage setting changes the run id, not the stage one it reuses
    other = by_label(plan_runs(parse_spec(SPEC + methods("ce=ce", 'crt=crt:"crt.epochs" = 3')), SUBSETS))
    assert other["crt", 0].run_id != before["crt", 0].run_id
    assert other["crt", 0].stage_one.run_id == before["crt", 0].stage_one.run_id


@pytest.fixture
def sharing_spec(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC + methods("ce=ce", "crt=crt", "tau=tau-norm", "ldam=ldam-drw"))
    return path


def test_a_study_trains_each_backbone_once_and_names_it(sharing_spec, tmp_path):
    calls, out = Calls(), tmp_path / "study"
    assert run_study(sharing_spec, out, run_function=calls, log=None) == {"cached": 0, "ran": 8, "failed": 0}
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False)
    assert list(metrics.columns) == list(store.METRIC_COLUMNS)
    assert list(metrics.columns[-6:]) == ["stage_one", "train_accuracy", "epochs", "val_accuracy", "check_accuracy",
                                          "val_check_z"]
    rows = {(r.method, r.subset): r for r in metrics.itertuples()}
    for d in (0, 1):
        ce = rows["ce", d].run_id
        assert rows["crt", d].stage_one == rows["tau", d].stage_one == ce
        assert rows["ce", d].stage_one == rows["ldam", d].stage_one == ""
        for label in ("crt", "tau"):
            info = json.loads((out / "runs" / rows[label, d].run_id / "run.json").read_text())
            assert info["stage_one"] == ce
        assert json.loads((out / "runs" / ce / "run.json").read_text())["stage_one"] is None
    assert (metrics["epochs"] == 2).all() and (metrics["train_accuracy"] == 0.9).all()
    assert np.allclose(metrics["val_accuracy"], metrics["all"])  # the fake's validation accuracy
    by_method = {}
    for call in calls.calls:
        by_method.setdefault(call["method"], []).append(call)
    assert all(c["stage_one"] is None and c["keep"] for c in by_method["ce"])
    assert all(c["stage_one"] is None and not c["keep"] for c in by_method["ldam-drw"])
    ce_dirs = {c["seed"]: Path(c["out"]).name.split(store.TMP_MARK)[0] for c in by_method["ce"]}
    for method in ("crt", "tau-norm"):
        for call in by_method[method]:  # the checkpoint of the same subset's ce run, ready when called
            assert call["stage_one_ready"] and Path(call["stage_one"]).parent.name == ce_dirs[call["seed"]]
            assert not call["keep"]


def test_a_reusing_run_listed_first_has_its_stage_one_trained_first(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC + methods("crt=crt", "ce=ce"))
    calls, out = Calls(), tmp_path / "study"
    assert run_study(spec, out, run_function=calls, log=None) == {"cached": 0, "ran": 4, "failed": 0}
    assert [c["method"] for c in calls.calls] == ["ce", "crt", "ce", "crt"]
    assert len(set(calls.run_ids())) == 4 and all(c["stage_one_ready"] for c in calls.calls if c["method"] == "crt")


def test_a_study_resumed_with_the_backbone_done_does_not_retrain_it(sharing_spec, tmp_path, monkeypatch):
    calls, out = Calls(), tmp_path / "study"
    monkeypatch.setenv("FAKE_FAIL", "crt")  # the backbones and the other runs finish, crt does not
    assert run_study(sharing_spec, out, run_function=calls, log=None)["failed"] == 2
    monkeypatch.delenv("FAKE_FAIL")
    trained = len(calls.calls)
    assert run_study(sharing_spec, out, run_function=calls, log=None) == {"cached": 6, "ran": 2, "failed": 0}
    assert [c["method"] for c in calls.calls[trained:]] == ["crt", "crt"]
    assert all(c["stage_one_ready"] for c in calls.calls[trained:])


def test_a_failed_stage_one_fails_the_runs_that_reuse_it(sharing_spec, tmp_path, monkeypatch):
    calls, out = Calls(), tmp_path / "study"
    monkeypatch.setenv("FAKE_FAIL", "ce")
    assert run_study(sharing_spec, out, run_function=calls, log=None) == {"cached": 0, "ran": 2, "failed": 6}
    # each backbone tried once, nothing trained on a missing one
    assert sorted(c["method"] for c in calls.calls) == ["ce", "ce", "ldam-drw", "ldam-drw"]
    metrics = pd.read_csv(out / "metrics.csv")
    for row in metrics[metrics["method"].isin(["crt", "tau"])].itertuples():
        assert row.status == "failed" and row.error.startswith(f"its stage one {row.stage_one} failed: RuntimeError")
    monkeypatch.delenv("FAKE_FAIL")
    assert run_study(sharing_spec, out, run_function=calls, log=None) == {"cached": 2, "ran": 6, "failed": 0}


def test_a_finished_stage_one_without_a_checkpoint_is_not_reused(sharing_spec, tmp_path):
    """A backbone run finished before the sharing was planned keeps no checkpoint: the run that
    would reuse it trains its own stage one, and says so."""
    calls, out = Calls(), tmp_path / "study"
    only_ce = tmp_path / "ce.toml"
    only_ce.write_text(SPEC + methods("ce=ce"))
    run_study(only_ce, out, run_function=calls, log=None)
    for checkpoint in (out / "runs").glob("*/checkpoint.pt"):
        checkpoint.unlink()
    assert run_study(sharing_spec, out, run_function=calls, log=None) == {"cached": 2, "ran": 6, "failed": 0}
    assert all(c["stage_one"] is None for c in calls.calls)
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False)
    assert set(metrics["stage_one"]) == {""}


def test_a_reused_stage_one_trains_on_the_device_its_own_run_got(monkeypatch):
    from bvkit.study import planning

    monkeypatch.setattr(planning, "gpu_count", lambda: 2)
    spec = parse_spec(SPEC.replace('device = "cpu"', 'device = "auto"') + methods("ce=ce", "crt=crt", "lws=lws"))
    tasks = planning.assign_devices(plan_runs(spec, SUBSETS))
    runs = by_label(tasks)
    assert [t.device for t in tasks] == ["cuda:0", "cuda:1"] * 3
    for d in (0, 1):
        for label in ("crt", "lws"):
            assert runs[label, d].stage_one == runs["ce", d]  # the provider's task itself, its device included


def test_two_workers_train_each_reusing_run_right_after_its_backbone(tmp_path, fake_env, monkeypatch):
    """With two worker processes, a backbone and the runs that reuse its stage one go to one
    worker in turn (a chain), so no reusing run waits for the end of the study."""
    from test_processes import executions

    monkeypatch.setenv("FAKE_SLEEP", "0.3")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC + methods("ce=ce", "crt=crt", "tau-norm=tau-norm", "ldam-drw=ldam-drw", "ride=ride",
                                   "ride-ea=ride-ea"))
    out = tmp_path / "study"
    assert run_study(spec, out, jobs=2, log=None) == {"cached": 0, "ran": 12, "failed": 0}
    calls = executions(fake_env)
    assert len(calls) == 12 and len({c["pid"] for c in calls}) >= 2
    for i, call in enumerate(calls):
        if call["stage_one"] is None:
            continue
        provider = Path(call["stage_one"]).parent.name
        before = [c["run_id"] for c in calls[:i] if c["pid"] == call["pid"]]
        # the worker's previous run is its backbone, or a run reusing that same backbone
        assert before and (before[-1] == provider or
                           Path(next(c for c in calls if c["run_id"] == before[-1])["stage_one"] or "").parent.name
                           == provider)


def test_a_changed_built_in_default_changes_the_run_id_and_old_directories_keep_theirs(tmp_path):
    """Run ids are a digest of the resolved recipe: a default the spec never names (ce's weight
    decay) changes them. A directory made when ids were a digest of the spec's own settings
    keeps its runs under those ids, and only the ones it holds."""
    from bvkit.study.planning import legacy_run_id

    text = SPEC + methods("ce=ce", "crt=crt")
    before = by_label(plan_runs(parse_spec(text), SUBSETS))
    original = get_method("ce")
    register_method(replace(original, weight_decay=1e-3), overwrite=True)
    try:
        changed = by_label(plan_runs(parse_spec(text), SUBSETS))
    finally:
        register_method(original, overwrite=True)
    assert changed["ce", 0].run_id != before["ce", 0].run_id  # the spec is the same; the recipe is not
    assert changed["crt", 0].run_id == before["crt", 0].run_id  # crt's own recipe is unchanged
    spec = parse_spec(text)
    digests = [planning.indices_digest(s) for s in SUBSETS]
    old = {(m.name, d): legacy_run_id(spec, m, digests[d], m.seeds[d]) for m in spec.methods for d in range(2)}
    assert set(old.values()).isdisjoint(t.run_id for t in before.values())
    runs = tmp_path / "runs"
    (runs / old["ce", 0]).mkdir(parents=True)  # finished under its old id
    (runs / f"{old['crt', 1]}{store.TMP_MARK}vm-1-abc").mkdir()  # interrupted in flight under its old id
    found = by_label(plan_runs(spec, SUBSETS, tmp_path))
    assert found["ce", 0].run_id == old["ce", 0] and found["crt", 0].stage_one.run_id == old["ce", 0]
    assert found["crt", 1].run_id == old["crt", 1]
    assert found["ce", 1].run_id == before["ce", 1].run_id and found["crt", 0].run_id == before["crt", 0].run_id
