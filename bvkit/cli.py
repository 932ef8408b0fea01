"""The ``bvkit`` command: one sub-command per layer, each registered by its own module.

Every ``commands`` module exposes ``register(subparsers)`` and keeps heavy imports (torch)
inside the function it runs, so ``bvkit decompose`` starts without loading torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from bvkit.errors import BvkitError
from bvkit.plugins import load_entry_points

COMMAND_MODULES = (
    "bvkit.data.commands",
    "bvkit.models.commands",
    "bvkit.decomposition.commands",
    "bvkit.report.commands",
    "bvkit.train.commands",
    "bvkit.study.commands",
    "bvkit.pipeline_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bvkit", description="Bias-variance analysis of long-tailed recognition."
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = _terminate_as_interrupt()
    try:
        load_entry_points()  # installed packages' plugins (group "bvkit.plugins") register first
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except BvkitError as err:
        print(f"bvkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bvkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bvkit ... | head` closed the pipe: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not None:  # the caller's handler back (main() may run inside a notebook or a test)
            import signal

            signal.signal(signal.SIGTERM, previous)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """A warning of bvkit's (too few models, ...) as one line, as errors are."""
    print(f"bvkit: warning: {message}", file=sys.stderr)


def _terminate_as_interrupt():
    """``kill PID`` (SIGTERM) stops a command as Ctrl-C does: a study cancels its workers and
    keeps every finished run; a job started in the background (which ignores SIGINT) can so be
    stopped cleanly too. Returns the handler it replaced (None off the main thread)."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _version() -> str:
    from bvkit import __version__

    return f"bvkit {__version__}"


if __name__ == "__main__":
    sys.exit(main())
