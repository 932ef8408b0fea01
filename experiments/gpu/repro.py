"""One CIFAR-10-LT (IF = 100) run at a method's published recipe on the GPU, for run.sh:

    python experiments/gpu/repro.py METHOD OUT [KEY=VALUE ...] [--n-max N] [--imbalance IF]

(``--imbalance 1``: the balanced training set, every class at its full count.)

Prints one JSON line (method, accuracy per split, training seconds, wall seconds) and leaves
metrics.json / history.csv / predictions.npz / checkpoint.pt in OUT (a rerun resumes)."""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    from bvkit.train import train
    from bvkit.methods import parse_overrides as settings_of

    method, out, *rest = argv
    n_max, imbalance = None, 100.0
    if "--n-max" in rest:
        i = rest.index("--n-max")
        n_max = int(rest[i + 1])
        rest = rest[:i] + rest[i + 2:]
    if "--imbalance" in rest:
        i = rest.index("--imbalance")
        imbalance = float(rest[i + 1])
        rest = rest[:i] + rest[i + 2:]
    started = time.perf_counter()
    result = train(method, "cifar10-lt", imbalance=imbalance, seed=0, out=out, device="auto", progress=False,
                   n_max=n_max, log=lambda line: print(line, flush=True), **settings_of(rest))
    m = result.metrics
    print(json.dumps({"method": method, "imbalance": imbalance, "accuracy": m["accuracy"], "train_seconds": m["train_seconds"],
                      "wall_seconds": round(time.perf_counter() - started, 1), "mflops": m["mflops"],
                      "device": m["device"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
