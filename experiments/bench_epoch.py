"""A whole epoch, not just its steps: where the seconds of a 200-epoch ``bvkit train --dataset
cifar10-lt`` run go, per method.

For each method it runs ``bvkit.train.train`` on the real CIFAR-10-LT as ``bvkit train --dataset
cifar10-lt --method M --threads T`` does (its published 200-epoch recipe, an output directory so
that checkpoints and progress files are written), but trains stage one only over the epochs
``--start + 1 .. --start + --epochs`` (by default 159-162: one epoch before the first lr drop,
the drop epoch with its test snapshot, two epochs scored on the test set). The schedule, the DRW
switch and the test watch see those epochs' true numbers; the weights are a fresh model's, which
does not change what a step costs. Every part of an epoch is timed where the loop calls it:

- step: ``bvkit.train.loop.train_step`` (forward, loss, backward, SGD update);
- batches: the loader's batches (augmentation on the device-held data; RIDE's rotation is part of
  its loss's forward, so it is in the step);
- loop: the rest of the epoch's loop (moving batches, summing losses and correct counts);
- validation: ``Phase.validate`` (the validation split's forward and per-class accuracy);
- test watch: ``Phase.watch`` (the test forward from the first lr drop on, and every tenth of the
  run the test-logit snapshot);
- checkpoint, progress: ``save_checkpoint`` and ``write_progress`` after every epoch.

The 200-epoch run's share outside the step is then each part's measured mean times how often the
run does it (validation, checkpoint and progress 200 times; the test forward on the epochs from
the first drop on and on the snapshot epochs), over the run's total. One-off costs (loading the
data, the final evaluation and output files) are reported apart, per run.

    BVKIT_DATA=data-cache python experiments/bench_epoch.py --out experiments/results/bench_epoch.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

import bvkit.train.loop as loop
import bvkit.train.run as run_module
from bvkit.train import train
from bvkit.train.evaluation import first_drop_epoch, snapshot_every

METHODS = {"ce": ("ce", {}), "ldam-drw": ("ldam-drw", {}), "ride-3": ("ride", {"model_kwargs.num_experts": 3})}
PARTS = ("step", "batches", "loop", "validation", "test watch", "checkpoint", "progress")


class Timer:
    """Seconds per part, each epoch's kept apart (``epoch`` is the 1-based epoch being trained)."""

    def __init__(self):
        self.epoch = 0
        self.seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, part: str, seconds: float) -> None:
        self.seconds[self.epoch][part] += seconds

    def wrap(self, part: str, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(part, time.perf_counter() - started)
        return timed


class TimedLoader:
    """The phase's loader, its batches timed."""

    def __init__(self, loader, timer: Timer):
        self.loader, self.timer = loader, timer

    def __len__(self):
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.timer.add("batches", time.perf_counter() - started)
            yield batch


def measure(method: str, overrides: dict, start: int, epochs: int, workdir: Path, dataset: str = "cifar10-lt",
            **train_kwargs) -> dict:
    """One method's timed epochs and the counts of its full run (``train_kwargs``: more of
    ``bvkit.train.train``'s arguments, e.g. a small ``n_max``)."""
    timer = Timer()
    seen: dict = {}
    originals = (loop.train_step, loop.save_checkpoint, loop.write_progress, loop._train_epoch, run_module.train_phase)
    loop.train_step = timer.wrap("step", originals[0])
    loop.save_checkpoint = timer.wrap("checkpoint", originals[1])
    loop.write_progress = timer.wrap("progress", originals[2])

    def train_epoch(phase, epoch, *args):
        timer.epoch = epoch + 1
        started = time.perf_counter()
        try:
            return originals[3](phase, epoch, *args)
        finally:
            timer.add("epoch loop", time.perf_counter() - started)

    def train_phase(phase, total, ctx, start_epoch=0, **kwargs):
        seen.update(total=total, steps_per_epoch=len(phase.loader), from_epoch=phase.watch.from_epoch,
                    every=phase.watch.every)
        phase.loader = TimedLoader(phase.loader, timer)
        phase.validate = timer.wrap("validation", phase.validate)
        phase.watch = timer.wrap("test watch", phase.watch)
        end = time.perf_counter
        started = end()
        originals[4](phase, min(total, start + epochs), ctx, start_epoch=start, **kwargs)
        seen["phase_seconds"] = end() - started

    loop._train_epoch = train_epoch
    run_module.train_phase = train_phase
    started = time.perf_counter()
    try:
        train(method, dataset, out=workdir / method, seed=0, progress=False, **train_kwargs, **overrides)
    finally:
        (loop.train_step, loop.save_checkpoint, loop.write_progress, loop._train_epoch,
         run_module.train_phase) = originals
    total_seconds = time.perf_counter() - started
    per_epoch = {}
    for epoch, parts in sorted(timer.seconds.items()):
        parts = dict(parts)
        parts["loop"] = parts.pop("epoch loop", 0.0) - parts.get("step", 0.0) - parts.get("batches", 0.0)
        per_epoch[epoch] = {part: round(parts.get(part, 0.0), 3) for part in PARTS}
    return {"per_epoch": per_epoch, "one_off_seconds": round(total_seconds - seen["phase_seconds"], 1), **seen}


def full_run(result: dict) -> dict:
    """The measured parts scaled to the whole run: seconds per part over its ``total`` epochs."""
    epochs = result["per_epoch"]
    total, from_epoch, every = result["total"], result["from_epoch"], result["every"]
    mean = {part: statistics.mean(e[part] for e in epochs.values()) for part in PARTS if part != "test watch"}
    scored = [e["test watch"] for n, e in epochs.items() if n >= from_epoch and n % every]
    snapshot = [e["test watch"] for n, e in epochs.items() if n % every == 0]
    # a snapshot epoch runs the same test forward as a scored one, plus writing snapshots.npz
    scored_mean = statistics.mean(scored) if scored else None
    snapshot_mean = statistics.mean(snapshot) if snapshot else scored_mean
    n_scored = sum(1 for n in range(1, total + 1) if n >= from_epoch and n % every)
    n_snapshot = sum(1 for n in range(1, total + 1) if n % every == 0)
    seconds = {part: mean[part] * total for part in mean}
    seconds["test watch"] = (scored_mean or 0.0) * n_scored + (snapshot_mean or 0.0) * n_snapshot
    whole = sum(seconds.values())
    return {"seconds": {part: round(seconds[part], 1) for part in PARTS}, "whole_s": round(whole, 1),
            "outside_step_share": round(1 - seconds["step"] / whole, 4),
            "test_forward_epochs": {"scored": n_scored, "snapshot": n_snapshot}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--start", type=int, default=158, help="epochs taken as done (stage one resumes after them)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    lines = [
        "bvkit experiments/bench_epoch.py: a whole epoch of a 200-epoch `bvkit train --dataset cifar10-lt` run, part by part",
        f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
        f"python {platform.python_version()}; {args.threads} thread(s); niceness {os.nice(0)}; load average (1 min) {load:.2f} before",
        f"timed: stage-one epochs {args.start + 1}..{args.start + args.epochs} of each method's published recipe (seed 0), "
        "real CIFAR-10-LT (IF 100), output directory written as a run's",
        f"command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}",
    ]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            method, overrides = METHODS[name]
            result = measure(method, overrides, args.start, args.epochs, Path(tmp))
            result["full_run"] = full_run(result)
            results[name] = result
            lines.append("")
            lines.append(f"== {name}: {result['steps_per_epoch']} steps an epoch; test scored from epoch "
                         f"{result['from_epoch']}, snapshots every {result['every']} epochs; one-off "
                         f"(data, model, final evaluation, outputs) {result['one_off_seconds']} s")
            lines.append("epoch " + " ".join(f"{part:>11}" for part in PARTS) + "   outside step")
            for epoch, parts in result["per_epoch"].items():
                whole = sum(parts.values())
                lines.append(f"{epoch:5d} " + " ".join(f"{parts[part]:11.2f}" for part in PARTS)
                             + f"   {1 - parts['step'] / whole:6.1%}")
            run = result["full_run"]
            lines.append(f"200-epoch run: " + ", ".join(f"{part} {run['seconds'][part]:.0f} s" for part in PARTS)
                         + f"; whole {run['whole_s']:.0f} s; outside the step {run['outside_step_share']:.1%}"
                         f" (test forward on {run['test_forward_epochs']['scored']} scored + "
                         f"{run['test_forward_epochs']['snapshot']} snapshot epochs)")
            print("\n".join(lines[-(len(result['per_epoch']) + 4):]), flush=True)
    lines.append("")
    lines.append(f"load average (1 min) {os.getloadavg()[0]:.2f} after")
    lines.append(json.dumps({name: {"per_epoch": r["per_epoch"], "full_run": r["full_run"],
                                    "one_off_seconds": r["one_off_seconds"]} for name, r in results.items()}))
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
