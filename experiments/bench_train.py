"""Training throughput of packed models: model-images per second for K = 1, 4, 8, 16 packed
ResNet-32 and RIDE-3 (ResNet-32 experts), one optimisation step = augmentation of K batches,
forward, K losses, backward, SGD (Nesterov, weight decay) over the packed parameters.

    python experiments/bench_train.py                      # CPU, few steps per number
    python experiments/bench_train.py --device cuda --compile --full-run --study

``K=1 single`` is the plain single model (bvkit.train's path) as the baseline; ``K=1 packed``
the packed code path with one model. ``--full-run`` (CUDA) times one full 200-epoch CIFAR-10-LT
RIDE-3 run, ``--study`` a D = 10 CE study (redraw subsets, 200 epochs, packed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def header(args, torch) -> str:
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor() or platform.machine())
    lines = [
        f"# bvkit bench_train: {' '.join(sys.argv[1:]) or '(defaults)'}",
        f"# device {args.device}: {device}; cpus {os.cpu_count()}; torch threads {torch.get_num_threads()}",
        f"# python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}",
        f"# load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"# each number: 1 run of {args.steps} timed steps after {args.warmup} warm-up steps, batch {args.batch_size} per model"
        + ("; bf16 autocast, channels_last" if args.device.startswith("cuda") else "; fp32")
        + ("; torch.compile" if args.compile else "") + ("; CUDA graphs" if args.graphs else ""),
    ]
    return "\n".join(lines)


def bench_one(arch: str, k: int, single: bool, args, torch):
    from bvkit.losses import create_loss
    from bvkit.models import create_model
    from bvkit.models.packed_models import pack_models
    from bvkit.train.loop import autocast, prepare_batch
    from bvkit.train.graphs import GraphedStep
    from bvkit.data.loaders import crop_flip_rotate_with
    from bvkit.train.packing import PackLoss

    device = torch.device(args.device)
    name, kwargs = ("resnet32", {}) if arch == "resnet32" else ("ride-resnet32", {"num_experts": 3})
    counts = [5000 // (2 ** c) + 10 for c in range(10)]
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(create_model(name, 10, **kwargs).to(device))
    net = models[0] if single else pack_models(models)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    loss_fn = create_loss("ce" if arch == "resnet32" else "ride", counts).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    b = args.batch_size
    data = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (4096,), device=device)
    forward = torch.compile(net) if args.compile and device.type == "cuda" else net
    if single and arch != "resnet32":
        forward = net.forward_experts
    loss = loss_fn if single else PackLoss(net, [loss_fn] * k)
    graphed = GraphedStep(forward, loss, optimizer, device) if args.graphs and device.type == "cuda" else None
    mean = torch.tensor([0.49, 0.48, 0.45], device=device).view(1, 3, 1, 1)
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        idx = torch.randint(0, 4096, (k * b,), device=device, generator=gen)
        params = {"flip": torch.rand(k * b, 1, 1, device=device, generator=gen),
                  "rows": torch.randint(0, 9, (k * b, 1, 1), device=device, generator=gen),
                  "cols": torch.randint(0, 9, (k * b, 1, 1), device=device, generator=gen)}
        x = crop_flip_rotate_with(data[idx], 4, 0.0, params).float().div_(255).sub_(mean).div_(0.2)
        y = labels[idx].view(k, b)
        x = x.view(k, b, 3, 32, 32).transpose(0, 1).reshape(b, k * 3, 32, 32)
        x = prepare_batch(x, device)
        y = y[0] if single else y
        if graphed is not None:
            graphed(x, y, 0.05)
            return
        with autocast(device):
            total = loss(forward(x), y).sum()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return k * b * args.steps / seconds, seconds / args.steps


def full_run(args, log):
    from bvkit.train import train

    start = time.perf_counter()
    result = train("ride", "cifar10-lt", device=args.device, progress=False, seed=0)
    log(f"full 200-epoch CIFAR-10-LT RIDE-3 run: {time.perf_counter() - start:.0f} s wall-clock, "
        f"test accuracy {result.metrics['accuracy']}")


def study_run(args, log, out_dir):
    from bvkit.study import run_study

    spec = out_dir / "ce_d10.toml"
    spec.write_text('name = "ce-d10"\n[data]\ndataset = "cifar10-lt"\nimbalance = 100.0\n[subsets]\n'
                    f'scheme = "redraw"\ncount = 10\n[train]\ndevice = "{args.device}"\npack = "always"\n'
                    'pack_size = 10\n[[methods]]\nname = "ce"\nmethod = "ce"\n')
    start = time.perf_counter()
    counts = run_study(spec, out_dir / "ce_d10", log=log)
    log(f"D = 10 CE study (200 epochs, packed 10): {time.perf_counter() - start:.0f} s wall-clock, {counts}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ks", default="1,4,8,16")
    parser.add_argument("--archs", default="resnet32,ride3")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the packed model (CUDA only)")
    parser.add_argument("--graphs", action="store_true", help="CUDA: replay each step from a CUDA graph")
    parser.add_argument("--full-run", action="store_true", help="CUDA: time one full 200-epoch RIDE-3 run")
    parser.add_argument("--study", action="store_true", help="CUDA: time a D = 10 CE study")
    parser.add_argument("--out", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    lines = [header(args, torch), f"{'model':9} {'K':>3} {'path':7} {'model-img/s':>12} {'s/step':>8} {'model-img/s vs single':>25}"]
    print("\n".join(lines), flush=True)
    for arch in args.archs.split(","):
        base = None
        for k in [int(v) for v in args.ks.split(",")]:
            for single in ([True, False] if k == 1 else [False]):
                rate, per_step = bench_one(arch, k, single, args, torch)
                base = rate if single else base
                ratio = f"{rate / base:.2f}x" if base else ""
                line = f"{arch:9} {k:>3} {'single' if single else 'packed':7} {rate:12.0f} {per_step:8.3f} {ratio:>25}"
                lines.append(line)
                print(line, flush=True)
    lines.append(f"# load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(lines[-1])
    from pathlib import Path

    if args.full_run or args.study:
        out_dir = Path(args.out).parent if args.out else Path("bench-train-runs")
        out_dir.mkdir(parents=True, exist_ok=True)

        def log(message):
            lines.append(f"# {message}")
            print(message, flush=True)

        if args.full_run:
            full_run(args, log)
        if args.study:
            study_run(args, log, out_dir)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
