"""Training-step throughput: plain ResNet-32 CE (the reference) vs bvkit's ResNet-32 and RIDE-3.

One step = forward, loss, backward, SGD on a batch of 128 random 32x32 images, 100 classes
(CIFAR-100-LT counts at IF 100 for the losses). The bvkit variants are the step ``bvkit train``
runs: the registered recipe's model, loss and optimizer (``bvkit.train.builders``), the batch
through ``prepare_batch`` and ``bvkit.train.loop.train_step`` under the recipe's precision
(``auto``: bf16 autocast where this CPU has fast bf16, ``bvkit.train.devices.resolve_precision``).

  reference     plain PyTorch ResNet-32 (written out below, independent of bvkit), NCHW, fp32, CE,
                SGD momentum 0.9 + Nesterov, wd 5e-4
  bvkit-r32     the ``ce`` recipe (bvkit's resnet32, channels_last), precision auto
  bvkit-r32-fp32  the same in fp32
  ride          the ``ride`` recipe: RIDE-3 ResNet-32 as created by default (fused expert weights,
                channels_last, expert_mode "auto"), the full RIDE loss (LDAM-DRW per expert +
                diversity KL) past the DRW epoch, precision auto
  ride-fp32     the same in fp32
  ride-grouped  expert_mode "grouped": all experts' layers as one grouped conv / BN each
  ride-split    expert_mode "split": experts one after the other through weight slices
  ride-nchw     the default but NCHW
  ride-naive    separate expert modules (the authors' layout), NCHW, fp32, same loss
  ride-naive-cl the same, channels_last, precision auto
  bvkit-r32-compiled, ride-compiled
                bvkit-r32 / ride with the model's forward through ``torch.compile`` (inductor); the
                first step's seconds (tracing and compiling, or loading inductor's on-disk cache)
                are reported apart from the timing

How close to the limit (the roofline): each variant's achieved GFLOP/s is its model's analytic
forward multiply-accumulates (``bvkit.models.count_flops``, the RIDE paper's MFLOPs) x 2 FLOPs
per MAC x 3 for forward + backward, times its steps' images per second. Beside it: this CPU's
theoretical peak for the threads used (cores x clock x FLOPs per cycle of its FMA units, the
derivation printed: ``cpu_peak``), and the rate of the best dense kernel torch has here, a large
GEMM in the variant's precision (``gemm_ceiling``), what a step made only of matrix products
could reach.

The machine is shared with other jobs, so the variants are interleaved: each round times
``--steps`` steps of every variant in turn, and we report the median over rounds (and the
paired ratio: the median over rounds of variant / reference in the same round).

    nice -n -10 python experiments/bench_step.py --threads 2 --rounds 15 --json \
        --out experiments/results/bench_step.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bvkit.methods import create_method
from bvkit.models import count_flops
from bvkit.train.builders import build_loss, build_model, make_optimizer, training_forward
from bvkit.train.devices import fast_bf16, resolve_precision
from bvkit.train.loop import prepare_batch, train_step

BATCH, CLASSES, SIDE = 128, 100, 32
DEVICE = torch.device("cpu")


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


# variant: (method, precision, recipe overrides)
VARIANTS = {
    "bvkit-r32": ("ce", "auto", {}),
    "bvkit-r32-fp32": ("ce", "fp32", {}),
    "ride": ("ride", "auto", {}),
    "ride-fp32": ("ride", "fp32", {}),
    "ride-grouped": ("ride", "auto", {"model_kwargs.expert_mode": "grouped"}),
    "ride-split": ("ride", "auto", {"model_kwargs.expert_mode": "split"}),
    "ride-nchw": ("ride", "auto", {"model_kwargs.channels_last": False}),
    "ride-naive": ("ride", "fp32", {"model_kwargs.fused": False, "model_kwargs.channels_last": False}),
    "ride-naive-cl": ("ride", "auto", {"model_kwargs.fused": False}),
}
COMPILED = {"bvkit-r32-compiled": "bvkit-r32", "ride-compiled": "ride"}  # variant: the one it compiles
KNOWN = ("reference", *VARIANTS, *COMPILED)


def batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, 3, SIDE, SIDE, generator=gen), torch.randint(0, CLASSES, (BATCH,), generator=gen)


def reference_step(seed: int = 0):
    torch.manual_seed(seed)
    x, y = batch(seed)
    model = ReferenceResNet32(CLASSES).train()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def bvkit_step(variant: str, seed: int = 0):
    """The step ``bvkit train`` runs for ``variant``'s recipe (see the module doc)."""
    method, precision, overrides = VARIANTS[COMPILED.get(variant, variant)]
    recipe = create_method(method, precision=precision, **overrides)
    model = build_model(recipe, CLASSES, 3, seed, DEVICE).train()
    loss = build_loss(recipe, cifar100_lt_counts(), DEVICE)
    if hasattr(loss, "set_epoch"):
        loss.set_epoch(170)  # past the DRW epoch: class weights and RIDE's temperatures on
    forward = training_forward(model, recipe)
    if variant in COMPILED:
        forward = torch.compile(forward)
    optimizer = make_optimizer(model.parameters(), recipe.lr, recipe.momentum, recipe.nesterov, recipe.weight_decay)
    x, y = batch(seed)
    resolved = resolve_precision(recipe.precision, DEVICE)

    def step():
        train_step(forward, loss, optimizer, prepare_batch(x, DEVICE), y, DEVICE, resolved)

    step.precision = resolved
    if variant in COMPILED:  # the first call compiles: timed here, apart from the rounds
        start = time.perf_counter()
        step()
        step.compile_seconds = time.perf_counter() - start
    return step


def make_step(variant: str):
    return reference_step() if variant == "reference" else bvkit_step(variant)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> dict:
    """``/proc/cpuinfo``'s first processor: vendor, family, model, MHz and flags."""
    info = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return {"vendor": info.get("vendor_id", ""), "family": int(info.get("cpu family", 0) or 0),
            "model": int(info.get("model", 0) or 0), "mhz": float(info.get("cpu MHz", 0) or 0),
            "flags": set(info.get("flags", "").split())}


def cpu_peak(threads: int, mhz: float | None = None) -> dict:
    """Theoretical peak GFLOP/s of ``threads`` cores in fp32 and bf16, and how it was derived.

    FLOPs per cycle per core = FMA pipes x fp32 lanes per pipe x 2 (multiply and add); bf16
    doubles it where ``avx512_bf16`` is present (VDPBF16PS: two bf16 products into each fp32 lane).
    Pipes and their width: AMD family 0x19 (Zen 3 / Zen 4) has two 256-bit FMA pipes (Zen 4 runs
    AVX-512 through them in two halves), family 0x1A (Zen 5) two 512-bit pipes (AMD's
    microarchitecture guides); otherwise two pipes as wide as the widest AVX the flags show. The
    clock is /proc/cpuinfo's "cpu MHz" (the nominal clock a VM reports; a boosting core can exceed
    it, which the GEMM ceiling shows)."""
    cpu = cpu_flags()
    flags, family = cpu["flags"], cpu["family"]
    widest = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    if cpu["vendor"] == "AuthenticAMD" and family == 0x19:
        pipe_bits, why = 256, "AMD family 0x19 (Zen 3/4): two 256-bit FMA pipes"
    elif cpu["vendor"] == "AuthenticAMD" and family >= 0x1A:
        pipe_bits, why = 512, "AMD family 0x1A (Zen 5): two 512-bit FMA pipes"
    else:
        pipe_bits, why = widest, f"two FMA pipes of the widest vectors the flags show ({widest}-bit)"
    fp32_per_cycle = 2 * (pipe_bits // 32) * 2
    bf16_per_cycle = fp32_per_cycle * (2 if "avx512_bf16" in flags else 1)
    ghz = (mhz or cpu["mhz"]) / 1000
    return {"fp32": threads * ghz * fp32_per_cycle, "bf16": threads * ghz * bf16_per_cycle,
            "how": (f"{threads} core(s) x {ghz:.2f} GHz x {fp32_per_cycle} fp32 / {bf16_per_cycle} bf16 FLOP per cycle "
                    f"({why}; bf16 x{bf16_per_cycle // fp32_per_cycle} by {'avx512_bf16' if bf16_per_cycle > fp32_per_cycle else 'no bf16 dot product'}; "
                    f"CPUID family {family:#x} model {cpu['model']:#x})")}


def gemm_ceiling(precision: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the fastest of ``repeats`` ``n`` x ``n`` x ``n`` matrix products in ``precision``
    (bf16 operands where ``bf16``) at torch's current thread count."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def step_gflop_per_image(variant: str) -> float:
    """Analytic FLOPs of one training image of ``variant``: forward MACs x 2 x 3."""
    if variant == "reference":
        macs = count_flops(ReferenceResNet32(CLASSES), input_size=SIDE)["mflops"] * 1e6
    else:
        method, precision, overrides = VARIANTS[COMPILED.get(variant, variant)]
        recipe = create_method(method, precision=precision, **overrides)
        with torch.device("meta"):
            model = build_model(recipe, CLASSES, 3, 0, torch.device("meta"))
        macs = count_flops(model, input_size=SIDE)["mflops"] * 1e6
    return 2 * 3 * macs / 1e9


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
    compiled = {v: round(s.compile_seconds, 1) for v, s in steps.items() if hasattr(s, "compile_seconds")}
    return rates, {v: getattr(s, "precision", "fp32") for v, s in steps.items()}, compiled


def table(rates, precisions, gflop, peak, ceiling) -> list[str]:
    variants = list(rates)
    ref = variants[0]
    ref_med = statistics.median(rates[ref])
    lines = [f"{'variant':15s} {'precision':>9s} {'median':>7s} {'best':>7s} {'ratio':>6s} {'paired':>7s} "
             f"{'GFLOP/s':>8s} {'%peak':>6s} {'%gemm':>6s}"]
    for v in variants:
        med, best = statistics.median(rates[v]), max(rates[v])
        paired = statistics.median(a / b for a, b in zip(rates[v], rates[ref]))
        achieved = med * gflop[v]
        lines.append(f"{v:15s} {precisions[v]:>9s} {med:7.1f} {best:7.1f} {med / ref_med:6.3f} {paired:7.3f} "
                     f"{achieved:8.1f} {100 * achieved / peak[precisions[v]]:6.1f} {100 * achieved / ceiling[precisions[v]]:6.1f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="reference,bvkit-r32,ride,bvkit-r32-fp32,ride-fp32",
                        help=f"comma-separated, the first is the reference of the ratios; known: {', '.join(KNOWN)}")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--threads", default="2", help="torch intra-op thread counts, one section each (e.g. 1,2)")
    parser.add_argument("--json", action="store_true",
                        help="print as the last line one JSON object: threads, img_per_s (medians) and paired ratios "
                        "of the last thread count")
    parser.add_argument("--out", default=None, help="also write the report here")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in KNOWN]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    thread_counts = [int(t) for t in args.threads.split(",")]

    lines = [
        "bvkit experiments/bench_step.py: training-step throughput (images/s)",
        (f"hardware: {cpu_model()}, {os.cpu_count()} logical CPUs, fast bf16 {'yes' if fast_bf16(DEVICE) else 'no'} "
         f"(precision auto -> {resolve_precision('auto', DEVICE)}); torch {torch.__version__} "
         f"(oneDNN/mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}); python {platform.python_version()}; "
         f"process niceness {os.nice(0)}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"),
        (f"step: batch {BATCH}, {SIDE}x{SIDE}x3, {CLASSES} classes, forward + loss + backward + SGD; bvkit variants: "
         "the recipe's step as `bvkit train` runs it"),
        (f"timing: warm-up {args.warmup} steps per variant, then {args.rounds} rounds; each round times {args.steps} "
         "step(s) of every variant in turn (round-robin), so background load hits all variants alike."),
        "median/best = images/s over rounds; ratio = median / reference median; paired = median over rounds of "
        "(variant / reference in the same round).",
    ]
    lines.append("roofline: GFLOP/s = images/s x analytic FLOPs per training image (forward MACs x 2 x 3); "
                 "%peak of this CPU's theoretical peak for the threads and the variant's precision; %gemm of a "
                 "2048^3 GEMM's rate in that precision at the same threads.")
    gflop = {v: step_gflop_per_image(v) for v in variants}
    lines.append("analytic GFLOP per training image: " + ", ".join(f"{v} {g:.4f}" for v, g in gflop.items()))
    summary = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        peak = cpu_peak(threads)
        ceiling = {p: gemm_ceiling(p) for p in ("fp32", "bf16")}
        load_before = os.getloadavg()
        rates, precisions, compiled = measure(variants, args.rounds, args.steps, args.warmup)
        load_after = os.getloadavg()
        lines += ["", f"== {threads} thread(s); load average (1 min) {load_before[0]:.2f} before, "
                  f"{load_after[0]:.2f} after",
                  f"peak: fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s = {peak['how']}",
                  f"GEMM ceiling (2048^3, best of 5): fp32 {ceiling['fp32']:.0f}, bf16 {ceiling['bf16']:.0f} GFLOP/s",
                  *([f"first step (compiling) of the compiled variants, seconds: {compiled}"] if compiled else []),
                  *table(rates, precisions, gflop, peak, ceiling)]
        summary = {
            "threads": threads, "rounds": args.rounds, "load_1min": [round(load_before[0], 2), round(load_after[0], 2)],
            "img_per_s": {v: round(statistics.median(r), 1) for v, r in rates.items()},
            "paired_ratio": {v: round(statistics.median(a / b for a, b in zip(r, rates[variants[0]])), 3)
                             for v, r in rates.items()},
            "gflop_per_s": {v: round(statistics.median(r) * gflop[v], 1) for v, r in rates.items()},
            "peak_gflop_per_s": {p: round(peak[p], 1) for p in ("fp32", "bf16")}, "peak_how": peak["how"],
            "gemm_gflop_per_s": {p: round(c, 1) for p, c in ceiling.items()},
            "precision": precisions, "compile_seconds": compiled, "torch": torch.__version__, "cpu": cpu_model(),
        }
    report = "\n".join(lines)
    print(report)
    if args.json:
        print(json.dumps(summary))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(report + "\n" + (json.dumps(summary) + "\n" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
