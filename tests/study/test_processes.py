"""The study as processes see it: SIGKILL and resume, two runners on one directory, Dask, the CLI."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from bvkit.study import run_study, store
from bvkit.study.planning import planned_runs

from study_helpers import REPO

pytestmark = pytest.mark.slow


def study_cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "bvkit.cli", "study", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def executions(log: Path) -> list[dict]:
    """One entry per call of the fake trainer, with the run id it trained."""
    if not log.exists():
        return []
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    for call in calls:
        call["run_id"] = Path(call["out"]).name.split(store.TMP_MARK)[0]
    return calls


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_complete(out: Path) -> list[str]:
    """Every planned run present exactly once, no leftovers, gathered outputs valid."""
    _, tasks = planned_runs(out)
    ids = sorted(t.run_id for t in tasks)
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ids
    assert not list(runs.glob("*.failed"))
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics["run_id"]) == ids and set(metrics["status"]) == {"done"}
    for name in ("CE", "RIDE-2"):
        with np.load(out / "predictions" / f"{name}.npz") as pred:
            assert pred["logits"].shape[0] == 3 and np.isfinite(pred["logits"]).all()
    return ids


def test_sigkill_mid_study_then_resume(spec_file, tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.6")
    out = tmp_path / "study"
    process = study_cli("run", spec_file, "--out", out, start_new_session=True)
    deadline = time.time() + 60
    while not list(out.glob("runs/*/metrics.json")):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.02)
    time.sleep(0.2)  # into the next run
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.parent.name: snapshot(p.parent) for p in out.glob("runs/*/metrics.json")}
    assert 1 <= len(finished) < 6
    assert list(out.glob(f"runs/*{store.TMP_MARK}*")), "the kill should leave a half-written run"

    rerun = study_cli("run", spec_file, "--out", out)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    ids = assert_complete(out)
    assert not list(out.glob(f"**/*{store.TMP_MARK}*"))
    for run_id, files in finished.items():
        assert snapshot(out / "runs" / run_id) == files  # untouched: same bytes, same mtimes
    trained = [c["run_id"] for c in executions(fake_env)]
    assert sorted(set(trained)) == ids
    assert all(trained.count(run_id) == 1 for run_id in finished)
    assert f"{len(finished)} cached" in stdout


def test_sigterm_stops_a_two_job_study_like_ctrl_c_then_resume(spec_file, tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.6")
    out = tmp_path / "study"
    process = study_cli("run", spec_file, "--out", out, "--jobs", "2", start_new_session=True)
    deadline = time.time() + 60
    while not list(out.glob("runs/*/metrics.json")):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.02)
    workers = psutil.Process(process.pid).children(recursive=True)
    process.terminate()  # SIGTERM to the study's own process only, as `kill PID` sends it
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "bvkit: interrupted" in stderr, stderr
    assert "Traceback" not in stderr
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers left running: {alive}"
    finished = {p.parent.name for p in out.glob("runs/*/metrics.json")}
    assert 1 <= len(finished) < 6
    rerun = study_cli("run", spec_file, "--out", out)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert_complete(out)
    assert f"{len(finished)} cached" in stdout


def test_two_processes_share_one_directory(spec_file, tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.4")
    out = tmp_path / "study"
    first, second = study_cli("run", spec_file, "--out", out), study_cli("run", spec_file, "--out", out)
    results = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    ids = assert_complete(out)
    trained = [c["run_id"] for c in executions(fake_env)]
    assert sorted(trained) == ids  # each run executed exactly once between the two processes


def test_two_processes_train_each_shared_backbone_once(spec_file, tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.4")
    spec_file.write_text(spec_file.read_text() + '[[methods]]\nname = "cRT"\nmethod = "crt"\n'
                         '[[methods]]\nname = "tau"\nmethod = "tau-norm"\n')
    out = tmp_path / "study"
    first, second = study_cli("run", spec_file, "--out", out), study_cli("run", spec_file, "--out", out)
    results = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    ids = assert_complete(out)
    calls = executions(fake_env)
    assert sorted(c["run_id"] for c in calls) == ids  # each run, backbones included, executed once
    metrics = pd.read_csv(out / "metrics.csv")
    ce = dict(zip(metrics.loc[metrics["method"] == "CE", "subset"], metrics.loc[metrics["method"] == "CE", "run_id"]))
    reusing = metrics[metrics["method"].isin(["cRT", "tau"])]
    assert len(reusing) == 6 and all(r.stage_one == ce[r.subset] for r in reusing.itertuples())
    for call in calls:
        if call["method"] in ("crt", "tau-norm"):  # started from its subset's finished CE checkpoint
            assert call["stage_one_exists"] and Path(call["stage_one"]).parent.name in ce.values()


def test_dask_backend_on_a_local_cluster(spec_file, tmp_path, fake_env):
    import distributed

    out = tmp_path / "study"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, host="127.0.0.1",
                                  protocol="tcp", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        counts = run_study(spec_file, out, jobs=2, backend="dask", scheduler=cluster.scheduler_address,
                           run_function="fake_runner:train_on_dask_worker", log=lambda m: None)
    assert counts == {"cached": 0, "ran": 6, "failed": 0}
    assert_complete(out)
    calls = executions(fake_env)
    assert len(calls) == 6 and all("Dask" in c["thread"] for c in calls)  # on the worker's threads


def test_dask_backend_starts_its_own_cluster(spec_file, tmp_path, fake_env):
    out = tmp_path / "study"
    counts = run_study(spec_file, out, jobs=1, backend="dask", run_function="fake_runner:train_on_dask_worker",
                       log=lambda m: None)
    assert counts["ran"] == 6
    calls = executions(fake_env)
    assert len(calls) == 6 and os.getpid() not in {c["pid"] for c in calls}
    assert all("Dask Worker" in c["process"] for c in calls), calls


def test_cli_run_with_two_jobs_then_status_and_bad_input(spec_file, tmp_path, fake_env, capsys, monkeypatch):
    from bvkit.cli import main

    monkeypatch.setenv("FAKE_SLEEP", "0.5")  # long enough that the second worker is up before the queue empties
    out = tmp_path / "study"
    run = study_cli("run", spec_file, "--out", out, "--jobs", "2")
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0 and "6 trained, 0 cached, 0 failed" in stdout, stderr
    assert_complete(out)
    pids = [c["pid"] for c in executions(fake_env)]
    assert len(set(pids)) == 2 and run.pid not in pids, pids  # two worker processes, neither the CLI's own
    assert main(["study", "status", str(out)]) == 0
    assert capsys.readouterr().out.startswith("tiny: 6 runs: 6 done")

    bad = tmp_path / "bad.toml"
    bad.write_text(spec_file.read_text().replace("count = 3", "count = 1"))
    for args, message in [(["run", str(bad), "--out", str(out)], "[subsets] count must be an integer >= 2, got 1"),
                          (["run", str(spec_file), "--out", str(out), "--scheduler", "tcp://x:1"], "--scheduler needs"),
                          (["status", str(tmp_path / "runs-elsewhere")], "not a study directory")]:
        assert main(["study", *args]) == 2
        stderr = capsys.readouterr().err
        assert stderr.startswith("bvkit: error: ") and stderr.count("\n") == 1 and message in stderr, stderr
