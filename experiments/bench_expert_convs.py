"""One RIDE expert layer on CPU: all experts as one grouped conv vs one conv per expert.

Why ``expert_mode="auto"`` runs the experts split on CPU (``bvkit.models.ride``): forward +
backward of a 3-expert 3x3 conv layer at batch 128, channels_last fp32, for RIDE-ResNet-32's
expert widths (24 channels at 16x16, 48 at 8x8) and ResNet-32's (32, 64) for comparison.

    python experiments/bench_expert_convs.py --out experiments/results/bench_expert_convs.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

BATCH, EXPERTS = 128, 3


def ms_per_call(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def layer_times(channels: int, side: int, repeats: int) -> tuple[float, float]:
    """(grouped, split) milliseconds for forward + backward of one 3-expert layer."""
    def tensor(c):
        return torch.randn(BATCH, c, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()

    stacked, weight = tensor(EXPERTS * channels), torch.randn(EXPERTS * channels, channels, 3, 3, requires_grad=True)
    inputs = [tensor(channels) for _ in range(EXPERTS)]
    weights = [torch.randn(channels, channels, 3, 3, requires_grad=True) for _ in range(EXPERTS)]

    def grouped():
        out = F.conv2d(stacked, weight, padding=1, groups=EXPERTS)
        out.backward(torch.ones_like(out))

    def split():
        for x, w in zip(inputs, weights):
            out = F.conv2d(x, w, padding=1)
            out.backward(torch.ones_like(out))

    return ms_per_call(grouped, repeats), ms_per_call(split, repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lines = [__doc__.splitlines()[0],
             f"{os.cpu_count()} logical CPUs; torch {torch.__version__}; python {platform.python_version()}; "
             f"batch {BATCH}, {EXPERTS} experts, {args.repeats} timed calls after 3 warm-up"]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        lines.append(f"== {threads} thread(s)")
        lines.append(f"{'channels':>8s} {'side':>4s} {'grouped ms':>10s} {'split ms':>8s} {'grouped/split':>13s}")
        for channels, side in ((24, 16), (48, 8), (32, 16), (64, 8)):
            grouped, split = layer_times(channels, side, args.repeats)
            lines.append(f"{channels:8d} {side:4d} {grouped:10.2f} {split:8.2f} {grouped / split:13.2f}")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
