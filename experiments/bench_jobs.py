"""Study throughput: one worker of two torch threads or two workers of one thread each?

Runs the same small study (``--spec``, by default CIFAR-10-LT: CE and RIDE-3 on two redrawn
subsets, one epoch each, with every run's validation and test passes) with ``bvkit study run
--jobs J`` for each J in ``--jobs`` in turn, ``--rounds`` times, each time into a fresh directory,
and reports each configuration's wall-clock seconds and training images per second (the runs'
training images over the study's wall time, so each run's fixed costs count: starting a worker,
loading the data, building the model, the test passes). Then the steady state of the epochs, by
``experiments/bench_step.py``: one process of ``cores`` threads alone against ``cores`` processes
of one thread each at once, the images per second of each summed (``--steady-rounds``). ``--jobs 1`` trains in the calling process with
torch's default threads (all cores); ``--jobs N`` (N > 1) in N loky workers of cores / N threads.
The winner is what ``bvkit study run --jobs auto`` picks on a CPU (``bvkit.study.backends``).

    BVKIT_DATA=data-cache python experiments/bench_jobs.py --rounds 2 --out experiments/results/bench_jobs.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SPEC = """name = "bench-jobs"
description = "CE and RIDE-3, two CIFAR-10-LT subsets, one epoch: what one worker or two get through"

[data]
dataset = "cifar10-lt"
imbalance = 100.0
profile = "exp"

[subsets]
scheme = "redraw"
count = 2

[train]
epochs = 1
device = "cpu"

[[methods]]
name = "ce"
method = "ce"

[[methods]]
name = "ride-3"
method = "ride"
options = { "model_kwargs.num_experts" = 3 }
"""


def one_study(spec: Path, jobs: int, workdir: Path) -> dict:
    out = workdir / f"jobs{jobs}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bvkit.cli", "study", "run", str(spec), "--out", str(out),
                           "--jobs", str(jobs)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bvkit study run --jobs {jobs} failed: {done.stderr.strip().splitlines()[-1:]}")
    images = 0
    for run in (out / "runs").glob("*/metrics.json"):
        metrics = json.loads(run.read_text())
        images += int(metrics["n_train"]) * int(metrics["epochs"])
    return {"jobs": jobs, "seconds": round(seconds, 1), "images": images}


def steady_state(rounds: int, variants: str = "bvkit-r32,ride") -> dict:
    """Training-step images/s of one process of all cores' threads, and of one process per core
    of one thread each running at once (summed), from ``bench_step.py --json``."""
    cores = os.cpu_count() or 1
    bench = [sys.executable, str(Path(__file__).with_name("bench_step.py")), "--variants", variants,
             "--rounds", str(rounds), "--json"]

    def rates(done) -> dict:
        return json.loads(done.stdout.strip().splitlines()[-1])["img_per_s"]

    alone = rates(subprocess.run(bench + ["--threads", str(cores)], capture_output=True, text=True, check=True))
    procs = [subprocess.Popen(bench + ["--threads", "1"], stdout=subprocess.PIPE, text=True) for _ in range(cores)]
    each = [json.loads(p.communicate()[0].strip().splitlines()[-1])["img_per_s"] for p in procs]
    return {"one process, threads": cores, "alone": alone, "per process": each,
            "summed": {v: round(sum(e[v] for e in each), 1) for v in alone}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=None, help="a study spec (default: the one above)")
    parser.add_argument("--jobs", default="1,2", help="comma-separated worker counts, timed in turn")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steady-rounds", type=int, default=10,
                        help="rounds of bench_step.py for the steady state (0: skip it)")
    parser.add_argument("--out", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench_jobs_"))
    spec = Path(args.spec) if args.spec else workdir / "spec.toml"
    if not args.spec:
        spec.write_text(SPEC)
    counts = [int(j) for j in args.jobs.split(",")]
    load = [round(os.getloadavg()[0], 2)]
    rows = []
    try:
        for _ in range(args.rounds):
            for jobs in counts:
                rows.append(one_study(spec, jobs, workdir))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    steady = steady_state(args.steady_rounds) if args.steady_rounds else None
    load.append(round(os.getloadavg()[0], 2))
    lines = ["bvkit experiments/bench_jobs.py: one study's wall time by number of workers",
             f"hardware: {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}; python "
             f"{platform.python_version()}; load average (1 min) {load[0]} before, {load[1]} after",
             f"spec: {args.spec or 'the built-in one (CE and RIDE-3, 2 CIFAR-10-LT subsets, 1 epoch)'}; "
             f"{args.rounds} round(s), configurations in turn",
             *(["", f"{'jobs':>4s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'train img/s':>12s}"] if rows else [])]
    for jobs in counts if rows else []:
        mine = [r for r in rows if r["jobs"] == jobs]
        seconds = [r["seconds"] for r in mine]
        rate = statistics.median(r["images"] / r["seconds"] for r in mine)
        lines.append(f"{jobs:4d} {statistics.median(seconds):9.1f} {min(seconds):7.1f} {max(seconds):7.1f} {rate:12.1f}")
    if steady:
        lines += ["", f"steady state (bench_step.py, {args.steady_rounds} rounds, median images/s of training steps):"]
        for v, rate in steady["alone"].items():
            lines.append(f"  {v:10s} one process of {steady['one process, threads']} threads {rate:7.1f}; "
                         f"{len(steady['per process'])} processes of 1 thread at once "
                         f"{' + '.join(f'{e[v]:.1f}' for e in steady['per process'])} = {steady['summed'][v]:.1f}")
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n" + "\n".join(json.dumps(r) for r in rows)
                                  + ("\n" + json.dumps(steady) if steady else "") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
