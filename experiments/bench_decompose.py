"""Benchmark ``bvkit.decompose``: all three losses with per-class and per-split frames.

(a) CIFAR-100 scale: D = 10 models, N = 10,000 test samples, C = 100 classes, float32 logits
    in memory; median of ``--runs`` runs (after one warm-up run).
(b) iNaturalist scale: D = 10, N = 24,426, C = 8,142, float16 logits in a directory of ``.npy``
    files (3.98 GB), generated here with a fixed seed, read memory-mapped. Each decomposition
    runs in a child process (so the generation does not count towards its peak RSS, read as the
    child's VmHWM) and is set against this machine's single-pass sequential read bandwidth of
    the same file, measured in the same run, cold (page cache dropped, when
    /proc/sys/vm/drop_caches is writable) and warm. "CPU s" is the child's user + system time.

Usage: python experiments/bench_decompose.py [--runs 5] [--inat-runs 3] [--cold-runs 3]
                                             [--tmp DIR] [--skip-inat] [--record FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd

import bvkit
import bvkit.decomposition as bd
from bvkit.decomposition.passes import default_jobs

CIFAR = dict(n_models=10, n_samples=10_000, n_classes=100)
INAT = dict(n_models=10, n_samples=24_426, n_classes=8_142)
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of (a), median reported")
    parser.add_argument("--inat-runs", type=int, default=3, help="warm runs of (b)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold-cache runs of (b)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to write the 4 GB file")
    parser.add_argument("--skip-inat", action="store_true")
    parser.add_argument("--record", type=Path, help="also write the report to this file")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    buffer = io.StringIO()
    with redirect_stdout(Tee(sys.stdout, buffer)):
        header()
        bench_cifar(args.runs)
        if not args.skip_inat:
            bench_inat(args.inat_runs, args.cold_runs, args.tmp)
        print(f"\nload average at the end: {load()}")
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(buffer.getvalue())


class Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)


def header() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo")
                  if line.startswith("MemTotal"))
    print("# bvkit.decompose benchmark")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"hardware: {cpu}, {len(os.sched_getaffinity(0))} cores available "
          f"({os.cpu_count()} online), {mem_kb / 2**20:.1f} GiB RAM, {platform.machine()}")
    print(f"versions: python {platform.python_version()}, numpy {np.__version__}, "
          f"pandas {pd.__version__}, bvkit {bvkit.__version__}")
    print(f"threads used by decompose: {default_jobs()} (default n_jobs)")
    print(f"load average at the start: {load()} (the machine is shared: timings are noisy)")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def make_logits(rng, n_models, n_samples, n_classes, labels, dtype=np.float32):
    """Partly agreeing models: a shared per-sample signal plus per-model noise."""
    signal = rng.standard_normal((1, n_samples, n_classes), dtype=np.float32) * 2
    signal[0, np.arange(n_samples), labels] += 4
    noise = rng.standard_normal((n_models, n_samples, n_classes), dtype=np.float32)
    return (signal + noise).astype(dtype)


def long_tail_counts(n_classes, n_max=500, imbalance=100):
    return (n_max * imbalance ** (-np.arange(n_classes) / (n_classes - 1))).astype(np.int64)


def bench_cifar(runs: int) -> None:
    d, n, c = CIFAR.values()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, c, n)
    logits = make_logits(rng, d, n, c, labels)
    counts = long_tail_counts(c)
    print(f"\n## (a) CIFAR-100 scale: D={d}, N={n:,}, C={c}, float32 in memory "
          f"({logits.nbytes / 1e6:.0f} MB); per-class + per-split frames")
    print(f"{'estimator':<12}{'loss':<16}{'median s':>10}{'min s':>9}{'max s':>9}"
          f"{'median CPU s':>14}  runs")
    for estimator in ("plugin", "population"):  # population: the default at D >= 3
        for loss in ("all", "squared", "zero-one", "cross-entropy"):
            kw = dict(train_counts=counts, loss=loss, estimator=estimator)
            bd.decompose(labels, logits=logits, **kw)  # warm-up
            times, cpu = [], []
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                bd.decompose(labels, logits=logits, **kw)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            print(f"{estimator:<12}{loss:<16}{statistics.median(times):>10.3f}{min(times):>9.3f}"
                  f"{max(times):>9.3f}{statistics.median(cpu):>14.3f}  {runs}")
    print("target: loss=all under 0.5 s (wall) for the plug-in terms; the population estimator "
          "(D = 10: 56 model subsets) is measured beside it")


def generate_inat(folder: Path) -> float:
    """Write the iNaturalist-size study as float16 .npy files, chunk by chunk."""
    d, n, c = INAT.values()
    rng = np.random.default_rng(2024)
    labels = rng.integers(0, c, n)
    bd.save_predictions(folder, labels, logits=np.zeros((d, 1, 1), np.float16),
                        train_counts=long_tail_counts(c, n_max=1000, imbalance=500))
    logits = np.lib.format.open_memmap(folder / "logits.npy", mode="w+", dtype=np.float16,
                                       shape=(d, n, c))
    step = 256
    # per-model noise is cut at random offsets from one pool: drawing 2e9 normals costs minutes
    pool = rng.standard_normal(step * c + (1 << 22), dtype=np.float32)
    for i in range(0, n, step):
        stop = min(i + step, n)
        signal = rng.standard_normal((stop - i, c), dtype=np.float32) * 2
        signal[np.arange(stop - i), labels[i:stop]] += 4
        for model, start in enumerate(rng.integers(0, 1 << 22, d)):
            noise = pool[start:start + signal.size].reshape(signal.shape)
            logits[model, i:stop] = (signal + noise).astype(np.float16)
    logits.flush()
    size = logits.nbytes
    del logits
    os.sync()
    return size


def drop_caches() -> bool:
    try:
        os.sync()
        DROP_CACHES.write_text("1\n")
        return True
    except OSError:
        return False


def read_pass(path: Path) -> float:
    """Seconds for one sequential pass reading the file into a 16 MB buffer."""
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - t0


def run_child(folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(folder)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(folder: Path) -> None:
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    result = bd.decompose_file(folder, loss="all")
    seconds = time.perf_counter() - t0
    assert len(result.per_class) == 3 * INAT["n_classes"]
    print(json.dumps({"seconds": seconds, "cpu_seconds": time.process_time() - cpu0,
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM).

    Not ru_maxrss: subprocess starts children with vfork, and Linux folds the parent's peak
    (here the 4 GB written while generating) into the child's ru_maxrss at exec.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def bench_inat(runs: int, cold_runs: int, tmp: Path | None) -> None:
    d, n, c = INAT.values()
    size = d * n * c * 2
    where = tmp or Path(tempfile.gettempdir())
    free = shutil.disk_usage(where).free
    print(f"\n## (b) iNaturalist scale: D={d}, N={n:,}, C={c:,}, float16 memory-mapped .npy "
          f"({size / 1e9:.2f} GB), loss=all, per-class + per-split frames")
    print(f"free disk at {where}: {free / 1e9:.0f} GB")
    if free < 2 * size:
        print("skipped: not enough free disk")
        return
    folder = Path(tempfile.mkdtemp(prefix="bvkit-bench-", dir=where)) / "inat"
    try:
        t0 = time.perf_counter()
        generate_inat(folder)
        print(f"generated in {time.perf_counter() - t0:.0f} s (seed 2024; not timed below)")
        logits_file = folder / "logits.npy"
        rows = []  # (cache state, child result, read bandwidth of the same state)
        cold = drop_caches()
        for _ in range(cold_runs if cold else 0):
            drop_caches()
            read_cold = size / read_pass(logits_file) / 1e9
            drop_caches()
            rows.append(("cold", run_child(folder), read_cold))
        if not cold:
            print("page cache cannot be dropped here (/proc/sys/vm/drop_caches not writable): "
                  "warm-cache numbers only")
        read_pass(logits_file)
        read_warm = statistics.median(size / read_pass(logits_file) / 1e9 for _ in range(3))
        for _ in range(runs):
            rows.append(("warm", run_child(folder), read_warm))
        print("read bandwidth = one sequential pass over the file with 16 MB read() calls; "
              "cold: right after dropping the page cache (each cold run has its own), warm: "
              "median of 3 passes")
        print(f"{'cache':<6}{'seconds':>9}{'CPU s':>8}{'GB/s':>7}{'read GB/s':>11}"
              f"{'% of read':>11}{'peak RSS':>11}")
        for cache, res, read_bw in rows:
            rate = size / res["seconds"] / 1e9
            print(f"{cache:<6}{res['seconds']:>9.2f}{res['cpu_seconds']:>8.1f}{rate:>7.2f}"
                  f"{read_bw:>11.2f}{100 * rate / read_bw:>10.0f}%"
                  f"{res['peak_rss_mb'] / 1024:>9.2f} GB")
        for cache in ("cold", "warm"):
            sel = [(r, bw) for c, r, bw in rows if c == cache]
            if sel:
                share = statistics.median(size / r["seconds"] / 1e9 / bw for r, bw in sel)
                secs = statistics.median(r["seconds"] for r, _ in sel)
                print(f"{cache} median of {len(sel)}: {secs:.2f} s, {100 * share:.0f}% of the "
                      f"{cache} read bandwidth")
        print(f"largest peak RSS: {max(r['peak_rss_mb'] for _, r, _ in rows) / 1024:.2f} GB "
              f"(VmHWM of the child)")
        print("targets: >= 25% of the read bandwidth (cold vs cold), peak RSS < 1.5 GB")
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
