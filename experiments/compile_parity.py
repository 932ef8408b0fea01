"""The compiled training forward against the eager one on real CIFAR-10-LT: loss curves side by
side, what the compile cost, whether a second process compiles again, and the recompiles.

Runs ``bvkit train --dataset cifar10-lt --method M --epochs E --threads T --compile off|on``
(seed 0, the recipe's bf16 on this CPU) for CE and RIDE-3, each in a fresh process, eager first.
The compiled runs of a method share one empty inductor cache directory (``TORCHINDUCTOR_CACHE_DIR``)
made for this script: the first compiles cold; for CE a second compiled process runs after it on
the same cache, which must load the graphs instead of compiling them (its FX-graph cache hits,
and its first epoch's seconds, against the cold one's). With E = 3 the proportional schedule
puts both lr drops and RIDE's DRW switch inside the run (epochs 3 of 3), so a recompile there
would show in the graph count (each run compiles 2 graphs: the full batch, then the epoch's
smaller last batch with a dynamic batch size).

Tolerance, fixed before measuring: each epoch's mean training loss within 1 % (relative) of the
eager run's, final validation and test accuracy within 2 points. For scale, each method is also
trained eagerly on another number of threads (1 instead of 2): the same computation summed in another
order, which is all that separates the compiled run from the eager one if compiling is right.

    BVKIT_DATA=data-cache python experiments/compile_parity.py --out experiments/results/compile_parity
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

METHODS = {"ce": ["--method", "ce"], "ride-3": ["--method", "ride", "--experts", "3"]}
LOSS_RTOL, ACCURACY_POINTS = 0.01, 2.0


def run(method: str, compile: str, epochs: int, threads: int, workdir: Path, cache: Path, name: str,
        kept: dict | None = None) -> dict:
    out = workdir / name
    command = [sys.executable, "-m", "bvkit.cli", "train", "--dataset", "cifar10-lt", *METHODS[method],
               "--epochs", str(epochs), "--threads", str(threads), "--compile", compile, "--out", str(out)]
    shown = " ".join(["bvkit", *command[3:]]).replace(str(out), "OUT")
    if kept and name in kept and kept[name]["command"] == shown:
        return {**kept[name], "kept": True}
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    history = pd.read_csv(out / "history.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    stage1 = history[history["stage"] == "stage1"]
    return {"name": name, "method": method, "compile": compile, "wall_s": round(wall, 1),
            "loss": [round(v, 5) for v in stage1["loss"]], "epoch_s": [round(v, 2) for v in stage1["seconds"]],
            "images_per_s": [round(v, 1) for v in stage1["images_per_s"]], "lr": list(stage1["lr"]),
            "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["accuracy"]["all"],
            "precision": metrics.get("precision"), "compile_record": metrics.get("compile"),
            "command": shown, "load_before": load_before,
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.json")
    parser.add_argument("--keep", action="store_true",
                        help="take the runs OUT.json already holds (same name and command) instead of training "
                        "them again; the compiled runs of a method are kept or rerun together (they share a cache)")
    args = parser.parse_args(argv)
    kept = {}
    if args.keep and args.out.with_suffix(".json").exists():
        kept = {r["name"]: r for r in json.loads(args.out.with_suffix(".json").read_text())}
        pairs = {f"{m}-compiled": f"{m}-compiled-again" for m in ("ce",)}  # a second process needs its first's cache
        pairs.update({again: first for first, again in pairs.items()})
        kept = {name: r for name, r in kept.items() if name not in pairs or pairs[name] in kept}
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for method in args.methods:
            cache = workdir / f"inductor-{method}"
            cache.mkdir()
            runs.append(run(method, "off", args.epochs, args.threads, workdir, cache, f"{method}-eager", kept))
            runs.append(run(method, "on", args.epochs, args.threads, workdir, cache, f"{method}-compiled", kept))
            if method == "ce":  # a second process on the same cache
                runs.append(run(method, "on", args.epochs, args.threads, workdir, cache, f"{method}-compiled-again", kept))
            other = 1 if args.threads != 1 else 2  # eager summed in another order
            runs.append(run(method, "off", args.epochs, other, workdir, cache, f"{method}-eager-{other}-thread", kept))
            for r in runs[-3 if method != "ce" else -4:]:
                print(r["name"], r["loss"], r["epoch_s"], r["val_accuracy"], r["test_accuracy"], r["compile_record"],
                      flush=True)
    import torch

    lines = ["# The compiled training forward against eager, real CIFAR-10-LT",
             "",
             f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `experiments/compile_parity.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`: {platform.machine()}, {os.cpu_count()} logical "
             f"CPUs, torch {torch.__version__}, python {platform.python_version()}, {args.threads} threads; load "
             f"average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after this invocation (runs "
             "marked * under Commands were measured by an earlier one and read back with --keep; each run's "
             "`load_before` in the .json). Each run a fresh process, "
             f"seed 0, {args.epochs} epochs of the published recipe scaled proportionally (both lr drops and "
             "the DRW switch in the last epoch). The compiled runs of a method share one inductor cache "
             "directory, empty before the method's first compiled run.",
             "",
             f"Tolerance, fixed before measuring: training loss within {LOSS_RTOL:.0%} of eager per epoch; "
             f"validation and test accuracy within {ACCURACY_POINTS:.0f} points.",
             ""]
    verdicts = []
    for method in args.methods:
        eager = next(r for r in runs if r["name"] == f"{method}-eager")
        lines += [f"## {method}", "", "| run | epoch | lr | loss | vs eager | epoch s | img/s |", "|---|---|---|---|---|---|---|"]
        for r in (r for r in runs if r["method"] == method):
            for e, (loss, lr, secs, ips) in enumerate(zip(r["loss"], r["lr"], r["epoch_s"], r["images_per_s"]), 1):
                rel = (loss - eager["loss"][e - 1]) / eager["loss"][e - 1]
                lines.append(f"| {r['name']} | {e} | {lr:.3g} | {loss:.4f} | {rel:+.2%} | {secs:.1f} | {ips:.0f} |")
        lines += ["", "| run | val acc | test acc | wall s | compile record |", "|---|---|---|---|---|"]
        for r in (r for r in runs if r["method"] == method):
            record = r["compile_record"] or {}
            shown = {k: v for k, v in record.items() if k not in ("mode", "reason")}
            lines.append(f"| {r['name']} | {100 * r['val_accuracy']:.2f} | {100 * r['test_accuracy']:.2f} | "
                         f"{r['wall_s']:.0f} | {json.dumps(shown)} |")
        for r in (r for r in runs if r["method"] == method and r is not eager):
            outside = [e for e, (a, b) in enumerate(zip(r["loss"], eager["loss"]), 1) if abs(a - b) > LOSS_RTOL * abs(b)]
            loss_said = (f"loss within {LOSS_RTOL:.0%} every epoch" if not outside else
                         f"loss OUTSIDE {LOSS_RTOL:.0%} in epoch {', '.join(map(str, outside))}")
            acc_ok = all(abs(r[k] - eager[k]) * 100 <= ACCURACY_POINTS for k in ("val_accuracy", "test_accuracy"))
            if r["compile"] == "off":
                verdicts.append(f"- {r['name']} (eager, the reference): {loss_said}, accuracy "
                                f"{'within' if acc_ok else 'OUTSIDE'} {ACCURACY_POINTS:.0f} points")
                continue
            verdicts.append(f"- {r['name']}: {loss_said}, "
                            f"accuracy {'within' if acc_ok else 'OUTSIDE'} {ACCURACY_POINTS:.0f} points; "
                            f"{r['compile_record'].get('graphs')} graphs compiled; first epoch "
                            f"{r['epoch_s'][0]:.1f} s vs eager {eager['epoch_s'][0]:.1f} s; later epochs "
                            f"{sum(r['epoch_s'][1:]) / max(len(r['epoch_s']) - 1, 1):.1f} s vs eager "
                            f"{sum(eager['epoch_s'][1:]) / max(len(eager['epoch_s']) - 1, 1):.1f} s")
        reference = next((r for r in runs if r["method"] == method and r["compile"] == "off" and r is not eager), None)
        compiled = next((r for r in runs if r["method"] == method and r["compile"] == "on"), None)
        if reference is not None and compiled is not None:
            def spread(r):
                loss = max(abs(a - b) / abs(b) for a, b in zip(r["loss"], eager["loss"]))
                points = max(abs(r[k] - eager[k]) * 100 for k in ("val_accuracy", "test_accuracy"))
                return loss, points
            (cl, cp), (rl, rp) = spread(compiled), spread(reference)
            verdicts.append(f"- {method}: against eager, the compiled run's largest loss deviation {cl:.2%} and "
                            f"accuracy deviation {cp:.2f} points; eager on {reference['command'].split('--threads ')[1].split()[0]} "
                            f"thread(s) (the same computation summed in another order) {rl:.2%} and {rp:.2f} points: "
                            + ("the compiled run is within eager's own spread" if cl <= rl and cp <= rp else
                               "the compiled run deviates more than eager's own spread" if cl > rl and cp > rp else
                               "the compiled run is within eager's own spread on one measure, not the other"))
        lines.append("")
    lines += ["## Verdicts", "", *verdicts, "", "Commands (OUT: a temporary directory; * taken from an earlier "
              "invocation's OUT.json with `--keep`):", "",
              *[f"- `{r['command']}`{' *' if r.get('kept') else ''}" for r in runs], ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps([{k: v for k, v in r.items() if k != "kept"} for r in runs],
                                                        indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
