"""Training-step throughput: plain ResNet-32 CE (the reference) vs our RIDE-3 vs a naive RIDE-3.

One step = forward, loss, backward, SGD (lr 0.1, momentum 0.9, Nesterov, wd 5e-4) on a batch
of 128 random 32x32 images, 100 classes. Variants:

  reference     plain PyTorch ResNet-32 (written out below, independent of bvkit), NCHW fp32, CE
  bvkit-r32     bvkit's resnet32 (channels_last by default), CE
  ride          bvkit's RIDE-3 ResNet-32 as created by default (fused expert weights,
                channels_last, expert_mode "auto": "split" on CPU, "grouped" on GPU),
                full RIDE loss (LDAM-DRW per expert + diversity KL, past the DRW epoch)
  ride-grouped  expert_mode "grouped": all experts' layers as one grouped conv / BN each
  ride-split    expert_mode "split": experts one after the other through weight slices
  ride-nchw     the default but NCHW
  ride-naive    separate expert modules run one after the other, NCHW: the reference code's
                layout, same loss
  ride-naive-cl the same, channels_last
  ride-no-mkldnn  the default model with torch.backends.mkldnn disabled (plain im2col convs)

The machine is shared with other jobs, so the variants are interleaved: each round times
``--steps`` steps of every variant in turn, and we report the median over rounds (and the best
round), so background load hits all variants alike.

    nice -n -10 python experiments/bench_step.py --rounds 15 --out experiments/results/bench_step.txt
    OMP_WAIT_POLICY=PASSIVE nice -n -10 python experiments/bench_step.py --threads 2 \
        --out experiments/results/bench_step_omp_passive.txt
    nice -n -10 python experiments/bench_step.py --threads 1 --rounds 3 \
        --variants reference,ride,ride-nchw,ride-no-mkldnn,ride-naive-cl \
        --out experiments/results/bench_step_variants.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bvkit.losses import create_loss
from bvkit.models import create_model

BATCH, CLASSES, SIDE = 128, 100, 32


# ---------------------------------------------------------------- the plain reference ResNet-32
class _RefBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - in_planes) // 2 if stride != 1 or in_planes != planes else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class ReferenceResNet32(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(5):
                layers.append(_RefBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ---------------------------------------------------------------- variants
def cifar100_lt_counts():
    return (500 * 0.01 ** (np.arange(CLASSES) / (CLASSES - 1))).astype(int)


VARIANTS = {  # RIDE-3 variants: create_model options
    "ride": {},  # bvkit's defaults: fused weights, channels_last, expert_mode "auto"
    "ride-grouped": {"expert_mode": "grouped"},
    "ride-split": {"expert_mode": "split"},
    "ride-nchw": {"channels_last": False},
    "ride-naive": {"fused": False, "channels_last": False},
    "ride-naive-cl": {"fused": False},
    "ride-no-mkldnn": {},  # the default model with torch.backends.mkldnn disabled
}


def make_step(variant: str, seed: int = 0):
    """A closure running one training step of ``variant``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, 3, SIDE, SIDE, generator=gen)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    if variant in ("reference", "bvkit-r32"):
        model = ReferenceResNet32(CLASSES) if variant == "reference" else create_model("resnet32", CLASSES)
        criterion = nn.CrossEntropyLoss()
        compute = lambda: criterion(model(x), y)
    else:
        options = VARIANTS[variant]
        model = create_model("ride-resnet32", CLASSES, num_experts=3, **options)
        criterion = create_loss("ride", cifar100_lt_counts())  # LDAM-DRW + diversity, lambda -0.45
        criterion.set_epoch(170)  # past the DRW epoch: class weights and temperatures on
        compute = lambda: criterion(model.forward_experts(x), y)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        with torch.backends.mkldnn.flags(enabled=variant != "ride-no-mkldnn"):
            opt.zero_grad(set_to_none=True)
            loss = compute()
            loss.backward()
            opt.step()
        return loss

    return step


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(variants, rounds, steps_per_round, warmup):
    """Interleaved timing: images/s of every variant in every round."""
    steps = {v: make_step(v) for v in variants}
    for v in variants:
        for _ in range(warmup):
            steps[v]()
    rates = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            start = time.perf_counter()
            for _ in range(steps_per_round):
                steps[v]()
            rates[v].append(steps_per_round * BATCH / (time.perf_counter() - start))
    return rates


def table(rates) -> list[str]:
    variants = list(rates)
    ref = variants[0]
    ref_med, ref_best = statistics.median(rates[ref]), max(rates[ref])
    lines = [f"{'variant':14s} {'median':>7s} {'best':>7s} {'ratio':>6s} {'paired':>7s} {'ratio(best)':>11s}"]
    for v in variants:
        med, best = statistics.median(rates[v]), max(rates[v])
        paired = statistics.median(a / b for a, b in zip(rates[v], rates[ref]))
        lines.append(f"{v:14s} {med:7.1f} {best:7.1f} {med / ref_med:6.3f} {paired:7.3f} {best / ref_best:11.3f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="reference,bvkit-r32,ride,ride-grouped,ride-naive",
                        help="comma-separated; the first is the reference of the ratios")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--threads", default="1,2",
                        help="torch intra-op thread counts to run, one section each (default 1,2)")
    parser.add_argument("--out", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in ("reference", "bvkit-r32", *VARIANTS)]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    thread_counts = [int(t) for t in args.threads.split(",")]

    header = (
        "bvkit experiments/bench_step.py: training-step throughput (images/s)",
        (f"hardware: {cpu_model()}, {os.cpu_count()} logical CPUs; torch {torch.__version__} "
        f"(oneDNN/mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}); "
        f"python {platform.python_version()}; process niceness {os.nice(0)}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"),
        (f"step: batch {BATCH}, {SIDE}x{SIDE}x3, {CLASSES} classes, fp32, forward + loss + backward + "
        "SGD (momentum 0.9, Nesterov, wd 5e-4)"),
        (f"timing: warm-up {args.warmup} steps per variant, then {args.rounds} rounds; each round times "
        f"{args.steps} step(s) of every variant in turn (round-robin), so background load from the"),
        "other jobs sharing this machine hits all variants alike. median/best = images/s over rounds;",
        ("ratio = median / reference median; paired = median over rounds of (variant / reference in the "
        "same round)."),
    )
    lines = list(header)
    for threads in thread_counts:
        torch.set_num_threads(threads)
        load_before = os.getloadavg()
        rates = measure(variants, args.rounds, args.steps, args.warmup)
        load_after = os.getloadavg()
        section = f"== {threads} thread(s); load average (1 min) {load_before[0]:.2f} before, "
        lines += ["", section + f"{load_after[0]:.2f} after", *table(rates)]
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
