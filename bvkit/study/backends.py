"""Where runs execute: joblib's loky processes here, a Dask cluster, or Ray, behind one call.

Dask runs go through the ``distributed.Client`` itself rather than joblib's dask backend:
joblib runs everything in the calling process when the cluster has a single thread
(``effective_n_jobs == 1``), which would train on the client instead of the worker (and its GPU).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from bvkit.errors import BvkitError

BACKENDS = ("loky", "dask", "ray")


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
