"""Where runs execute: joblib's loky processes here, a Dask cluster, or Ray, behind one call.

Dask runs go through the ``distributed.Client`` itself rather than joblib's dask backend:
joblib runs everything in the calling process when the cluster has a single thread
(``effective_n_jobs == 1``), which would train on the client instead of the worker (and its GPU).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any, Callable, Iterator

from bvkit.errors import BvkitError

BACKENDS = ("loky", "dask", "ray")
JOBS_AUTO = "auto"


def parse_jobs(value: int | str) -> int | str:
    """``--jobs``: a worker count >= 1 or ``auto`` (``resolve_jobs``); anything else a one-line error."""
    if value == JOBS_AUTO:
        return JOBS_AUTO
    try:
        jobs = int(value)
    except (TypeError, ValueError):
        raise BvkitError(f"--jobs must be a positive integer or {JOBS_AUTO!r}, got {value!r}") from None
    if jobs < 1:
        raise BvkitError(f"--jobs must be >= 1, got {jobs}")
    return jobs


def resolve_jobs(jobs: int | str, devices: Sequence[str]) -> int:
    """The number of workers for runs on ``devices``: ``jobs`` as given, or for ``auto`` one
    worker per GPU the runs are spread over, else one per CPU core. On a CPU each loky worker
    then trains with cores / workers = 1 torch thread: on the 2-core development machine two
    such workers stepped 1.08x (ResNet-32 CE) and 1.12x (RIDE-3) more images per second than one
    process of both cores, while runs of one epoch, where starting a worker and loading the
    data weigh, went 1.09x faster in one process (experiments/results/bench_jobs.txt); a study's
    runs are long, so the epochs decide."""
    jobs = parse_jobs(jobs)
    if jobs != JOBS_AUTO:
        return jobs
    gpus = {d for d in devices if str(d).startswith("cuda")}
    return len(gpus) if gpus else max(1, os.cpu_count() or 1)


def dispatch(calls: list[tuple[Callable, tuple]], *, jobs: int = 1, backend: str = "loky",
             scheduler: str | None = None) -> Iterator[Any]:
    """Yield ``fn(*args)`` for each ``(fn, args)`` in completion order.

    ``loky``: ``jobs`` worker processes on this machine (``jobs=1`` runs in this process).
    ``dask``: the cluster at ``scheduler``, else a LocalCluster on 127.0.0.1 with ``jobs``
    single-threaded workers. ``ray``: the Ray cluster ``ray.init`` finds (``scheduler`` is its
    address).
    """
    check_backend(backend, scheduler)
    if not calls:
        return
    if backend == "dask":
        from distributed import as_completed

        with _dask_client(jobs, scheduler) as client:
            futures = [client.submit(fn, *args, pure=False) for fn, args in calls]
            for future in as_completed(futures):
                yield future.result()
        return
    import joblib

    with _backend(backend, jobs, scheduler) as n_jobs:
        parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")
        yield from parallel(joblib.delayed(fn)(*args) for fn, args in calls)


def check_backend(backend: str, scheduler: str | None = None) -> None:
    if backend not in BACKENDS:
        raise BvkitError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if scheduler and backend == "loky":
        raise BvkitError("--scheduler needs --backend dask or ray")


@contextlib.contextmanager
def _backend(backend: str, jobs: int, scheduler: str | None):
    import joblib

    if backend == "loky":
        with joblib.parallel_config(backend="loky"):
            yield jobs
    else:
        with _ray(scheduler):
            with joblib.parallel_config(backend="ray"):
                yield jobs


@contextlib.contextmanager
def _dask_client(jobs: int, scheduler: str | None):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BvkitError("the dask backend needs `pip install 'dask[distributed]'`") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout=30)
        except OSError as err:
            raise BvkitError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=jobs, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _ray(address: str | None):
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError:
        raise BvkitError("the ray backend needs `pip install ray`") from None
    register_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
