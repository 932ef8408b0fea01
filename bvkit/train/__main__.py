"""``python -m bvkit.train ARGS`` = ``bvkit train ARGS`` (handy under ``torchrun -m bvkit.train``)."""

import argparse
import sys

from bvkit.errors import BvkitError
from bvkit.train.commands import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bvkit.train")
    subparsers = parser.add_subparsers(dest="command")
    register(subparsers)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except BvkitError as err:
        print(f"bvkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
