"""``bvkit train`` (one method on one long-tailed dataset) and ``bvkit methods`` (the registry)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bvkit.data.profiles import ALL, SPLITS
from bvkit.errors import BvkitError
from bvkit.methods import PRECISIONS, SCHEDULE_SCALINGS
from bvkit.train.compiling import COMPILE_MODES
from bvkit.train.devices import DEVICE_NAMES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a method on a long-tailed dataset",
        description="Train a method (see `bvkit methods`) and write metrics.json, predictions.npz, "
        "history.csv and checkpoint.pt to --out; rerunning the same command resumes. "
        "On imagenet-lt and inat2018 (the published file lists under --data-root, see the README) every "
        "method takes that benchmark's published setting unless overridden: ResNet-50 (RIDE: ride-resnet50, "
        "3 experts), 100 epochs, warm-up 5, lr x0.1 from epoch 61 and x0.01 from 81, DRW from 81, "
        "weight decay 2e-4; ImageNet-LT batch 256, lr 0.1; iNat batch 512, lr 0.2 (`bvkit methods "
        "--dataset imagenet-lt --show`). Multi-GPU: torchrun --nproc_per_node N -m bvkit.train ARGS.",
    )
    parser.add_argument("--dataset", required=True,
                        help="cifar10-lt, cifar100-lt, fashion-mnist-lt, synthetic-lt (held on the device); "
                        "imagenet-lt, inat2018 (file lists, read by DataLoader workers)")
    parser.add_argument("--imbalance", type=float, default=100.0, help="imbalance factor IF (default 100)")
    parser.add_argument("--method", required=True, help="a registered method, e.g. ce, ldam-drw, ride, ride-ea")
    parser.add_argument("--experts", type=int, help="number of RIDE experts (ride* methods only)")
    parser.add_argument("--epochs", type=int, help="stage-one epochs; lr/DRW milestones scale with it")
    parser.add_argument("--batch-size", type=int, help="stage-one batch size (default: the method's, 128)")
    parser.add_argument("--lr", type=float, help="stage-one peak learning rate (default: the method's, 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seeds init, data order and augmentation")
    parser.add_argument("--device", default="auto", help=f"{DEVICE_NAMES} (auto: CUDA when present)")
    parser.add_argument("--precision",
                        help=f"{', '.join(PRECISIONS)}; auto (default): bf16 autocast where the CPU (AVX512-BF16, AMX) or GPU (Ampere+) "
                        "has fast bf16, else fp32; losses, BN statistics and the optimizer stay float32")
    parser.add_argument("--schedule-scaling", choices=SCHEDULE_SCALINGS,
                        help="how a run of other --epochs than the recipe's 200 moves its lr drops, warm-up and "
                        "DRW switch: proportional (default), keep-steps (the phase after the first drop keeps "
                        "its length, up to half the run), min-share (that phase at least 40%% of the run)")
    parser.add_argument("--data-root", help="data directory (default: $BVKIT_DATA)")
    parser.add_argument("--n-max", type=int, help="images of the head class (default: the dataset's)")
    parser.add_argument("--model-width", type=int, help="base width of the CIFAR ResNet (16 for ResNet-32)")
    parser.add_argument("--workers", type=int,
                        help="DataLoader processes per rank for imagenet-lt / inat2018 (default: up to 8); "
                        "results do not depend on it")
    parser.add_argument("--stage-one", metavar="CKPT", help="skip stage one: load it from a bvkit checkpoint")
    parser.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint for ride-distill")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any recipe setting, e.g. loss_kwargs.gamma=2, crt.epochs=5, "
                        "model=resnext50-32x4d, augment.size=160 (repeatable)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out has a checkpoint")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="progress bar (auto: only when stderr is a terminal)")
    parser.add_argument("--no-cuda-graphs", action="store_true",
                        help="on CUDA, launch every step's kernels from Python instead of replaying a graph")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                        help="stage one's training forward through torch.compile: auto (default: only where "
                        "measured to pay within the run; on this project's CPU it did not), on, off")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (1 avoids stalls on a busy machine)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per epoch on stderr")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write each epoch's scalars to OUT/tensorboard for TensorBoard "
                             "(needs the tensorboard package: pip install 'bvkit[tensorboard]')")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (the current directory, then sys.path): it may register "
                             "your own methods, models or losses; repeatable")
    parser.set_defaults(func=train_command)

    methods = subparsers.add_parser("methods", help="list the registered training methods")
    methods.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'ride*'")
    methods.add_argument("--show", action="store_true", help="print each recipe as JSON")
    methods.add_argument("--dataset", help="the recipes as they run on this dataset (imagenet-lt, inat2018 "
                         "have their own published settings)")
    methods.set_defaults(func=methods_command)


def overrides_from_args(args) -> dict:
    """The recipe overrides of ``bvkit train``: ``--set`` items, then the named flags."""
    from bvkit.methods import named_overrides, parse_overrides

    return {**parse_overrides(args.set),
            **named_overrides(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              model_width=args.model_width, experts=args.experts, teacher=args.teacher,
                              precision=args.precision, schedule_scaling=args.schedule_scaling)}


def train_command(args: argparse.Namespace) -> int:
    from bvkit.methods import create_method
    from bvkit.plugins import load_plugins

    load_plugins(args.plugin, [Path.cwd()])
    recipe = create_method(args.method, dataset=args.dataset, **overrides_from_args(args))
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise BvkitError(f"data root not found: {args.data_root}")
    if args.stage_one is not None and not recipe.stages:
        raise BvkitError(f"--stage-one needs a two-stage method (crt, tau-norm, lws, ride-ea), not {args.method}")
    if args.stage_one is not None and not Path(args.stage_one).is_file():
        raise BvkitError(f"stage-one checkpoint not found: {args.stage_one}")
    if recipe.teacher is not None and not Path(recipe.teacher).is_file():
        raise BvkitError(f"{args.method} needs an existing --teacher checkpoint, got {recipe.teacher or 'none'}")
    if args.tensorboard:  # before any data is loaded
        from bvkit.train.tensorboard import summary_writer_class

        summary_writer_class()
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    if args.threads is not None:
        if args.threads < 1:
            raise BvkitError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)

    from bvkit.train import ddp
    from bvkit.train.run import train

    result = train(
        recipe,
        args.dataset,
        imbalance=args.imbalance,
        seed=args.seed,
        out=args.out,
        device=args.device,
        data_root=args.data_root,
        n_max=args.n_max,
        stage_one=args.stage_one,
        resume=not args.no_resume,
        progress=progress,
        log=_stderr_line if args.verbose else None,
        cuda_graphs=not args.no_cuda_graphs,
        workers=args.workers,
        tensorboard=args.tensorboard,
        compile=args.compile,
    )
    ddp.shutdown()  # under torchrun: all ranks leave the process group before the interpreter exits
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_summary(result.metrics))
    return 0


def _stderr_line(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def format_summary(metrics: dict) -> str:
    accuracy = metrics["accuracy"]
    cells = " / ".join(
        f"{name} {100 * accuracy[name]:.1f}" if accuracy[name] is not None else f"{name} -"
        for name in (ALL, *SPLITS)
    )
    line = f"{metrics['method']} on {metrics['dataset']} (seed {metrics['seed']}): {cells}"
    if metrics.get("mflops") is not None:
        line += f", {metrics['mflops']:.1f} MFLOPs"
    if metrics.get("expert_usage"):
        shares = ", ".join(f"{100 * s:.1f}%" for s in metrics["expert_usage"]["all"])
        line += f", samples using 1..n experts: {shares}"
    return line + f", {metrics['seconds']:.0f} s"


def methods_command(args: argparse.Namespace) -> int:
    from bvkit.methods import create_method, list_methods

    names = list_methods(args.pattern)
    if not names:
        raise BvkitError(f"no method matches {args.pattern!r}")
    for name in names:
        recipe = create_method(name, dataset=args.dataset)
        if args.show:
            print(json.dumps(recipe.to_dict(), indent=2))
        else:
            print(f"{name:18s} {recipe.description}")
    return 0
