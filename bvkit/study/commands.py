"""``bvkit study run|status|gather``."""

from __future__ import annotations

import sys

from bvkit.study.backends import BACKENDS
from bvkit.study.spec import PACK_MODES


def register(subparsers) -> None:
    study = subparsers.add_parser("study", help="run a study (methods x training subsets) and check on it")
    actions = study.add_subparsers(dest="study_command", metavar="ACTION")
    study.set_defaults(func=lambda args: _help(study))

    run = actions.add_parser(
        "run", help="train every missing run of SPEC into DIR, then gather predictions",
        description="Each (method, subset) run has a content-addressed id; finished runs are kept and "
                    "skipped, so rerunning the same command resumes an interrupted study, and two "
                    "processes on one DIR share its runs.",
        epilog="Testing hook: BVKIT_STUDY_RUNNER=module:function replaces the trainer "
               "(bvkit.study.execution:train_subset) with a function of the same signature.")
    run.add_argument("spec", help="study spec (.toml)")
    run.add_argument("--out", required=True, help="study directory (created; rerun the same command to resume)")
    run.add_argument("--pack", choices=PACK_MODES, default=None,
                     help="train runs of one method that differ only by subset/seed packed into one network "
                          "(auto: on CUDA only; default: the spec's [train] pack, else auto)")
    run.add_argument("--pack-size", type=int, default=None,
                     help="runs per pack (default: the spec's [train] pack_size, else 8)")
    add_dispatch_options(run)
    run.set_defaults(func=_run)

    status = actions.add_parser("status", help="table of the runs of a study directory")
    status.add_argument("dir", help="study directory")
    status.set_defaults(func=_status)

    gather = actions.add_parser(
        "gather", help="write DIR's metrics.csv and complete methods' predictions from the runs done so far",
        description="What `bvkit study run` writes when it ends (metrics.csv, predictions/<method>.npz of every "
                    "method whose runs are all done, expert_usage.csv), from the finished runs alone, without "
                    "training: for a study still running (safe beside it) or one whose run was stopped.")
    gather.add_argument("dir", help="study directory")
    gather.set_defaults(func=_gather)


def add_dispatch_options(parser, default_jobs: int | str = 1) -> None:
    """``--jobs``, ``--backend`` and ``--scheduler``: where a study's runs execute."""
    parser.add_argument("--jobs", "-j", default=default_jobs,
                        help=f"runs in parallel, or auto: one worker per GPU the runs use, else one per CPU core "
                        f"(default {default_jobs})")
    parser.add_argument("--backend", choices=BACKENDS, default="loky",
                        help="loky: processes here; dask: a dask.distributed cluster; ray: a Ray cluster")
    parser.add_argument("--scheduler",
                        help="Dask scheduler (or Ray) address; default: a local cluster with --jobs workers")


def _help(parser) -> int:
    parser.print_help()
    return 2


def _run(args) -> int:
    from bvkit.study.runner import run_study

    counts = run_study(args.spec, args.out, jobs=args.jobs, backend=args.backend, scheduler=args.scheduler,
                       pack=args.pack, pack_size=args.pack_size)
    if counts.get("failed"):
        print(f"bvkit: {counts['failed']} run(s) failed; `bvkit study status {args.out}` shows why, "
              "and the same command retries them", file=sys.stderr)
        return 1
    return 0


def _gather(args) -> int:
    from bvkit.study.runner import gather_study

    methods = gather_study(args.dir)
    print(f"{args.dir}: metrics.csv written; complete methods: {', '.join(methods) or 'none yet'}")
    return 0


def _status(args) -> int:
    from bvkit.study.status import status_table

    print(status_table(args.dir))
    return 0
