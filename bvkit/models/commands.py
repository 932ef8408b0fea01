"""``bvkit flops MODEL ...``: analytic MFLOPs and parameter count of a registered model."""

from __future__ import annotations

import argparse
import json

from bvkit.errors import BvkitError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="MFLOPs (MACs incl. BN, the RIDE paper's convention) and parameters of a model",
        description="Print a model's analytic MFLOPs per image and its parameter count. "
        "Routed RIDE: shared + E[#experts] x expert + routers.",
    )
    parser.add_argument("model", help="registered model name (see `bvkit flops --list`)", nargs="?")
    parser.add_argument("--list", action="store_true", help="list the registered models and exit")
    parser.add_argument("--experts", type=int, default=None, help="number of RIDE experts")
    parser.add_argument(
        "--expert-usage",
        default=None,
        metavar="P1,P2,...",
        help="percent of samples using 1, 2, ..., n experts (routed inference; sums to 100)",
    )
    parser.add_argument("--input-size", type=int, default=None,
                        help="input side in pixels (default: 32 CIFAR models, 224 ImageNet)")
    parser.add_argument("--num-classes", dest="n_classes", metavar="NUM_CLASSES", type=int, default=100,
                        help="classes (default 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=flops_command)


def flops_command(args: argparse.Namespace) -> int:
    from bvkit.models import count_flops, list_models

    if args.list:
        print("\n".join(list_models()))
        return 0
    if not args.model:
        raise BvkitError("flops needs a MODEL name (see `bvkit flops --list`)")
    if args.experts is not None and args.experts < 1:
        raise BvkitError(f"--experts must be >= 1, got {args.experts}")
    if args.input_size is not None and args.input_size < 1:
        raise BvkitError(f"--input-size must be >= 1, got {args.input_size}")
    try:
        result = count_flops(
            args.model,
            input_size=args.input_size,
            expert_usage=args.expert_usage,
            num_experts=args.experts,
            n_classes=args.n_classes,
        )
    except RuntimeError as err:  # e.g. an input too small for the network's downsampling
        raise BvkitError(f"cannot count {args.model!r} at this input size: {str(err).splitlines()[0]}") from None
    if args.json:
        print(json.dumps({"model": args.model, **{k: v for k, v in result.items() if k != "model"}}))
        return 0
    print(f"{args.model}: {result['mflops']:.2f} MFLOPs, {result['params'] / 1e6:.3f} M parameters")
    if "num_experts" in result:
        print(
            f"  shared {result['shared_mflops']:.2f} + {result['expected_experts']:.4g} x expert "
            f"{result['expert_mflops']:.2f} + routers {result['router_mflops']:.4f} "
            f"({result['num_experts']} experts)"
        )
    return 0
