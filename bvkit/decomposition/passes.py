"""Chunked passes over prediction arrays: per-sample terms, bootstrap replicate sums.

Test samples are processed in chunks on a thread pool (numpy releases the GIL), each chunk read
once into per-thread buffers (:class:`ChunkReader`), so resident memory stays at a few chunks
whatever the size of a memory-mapped input.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bvkit.decomposition import population as P
from bvkit.decomposition import terms as T
from bvkit.decomposition.chunk_reader import ChunkReader
from bvkit.errors import BvkitError

#: Float32 bytes a chunk of scores aims at: big enough to amortise Python overhead, small
#: enough that the kernel's passes over it stay in cache.
CHUNK_BYTES = 4 << 20


def default_chunk_size(shape, kind) -> int:
    n_models = shape[0]
    per_sample = n_models * (shape[2] * 4 if kind != "preds" else n_models * 8)
    return max(1, CHUNK_BYTES // per_sample)


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def map_chunks(fn, n_samples, chunk_size, n_jobs):
    """``fn(start, stop)`` over consecutive chunks, in order, on ``n_jobs`` threads."""
    bounds = [(i, min(i + chunk_size, n_samples)) for i in range(0, n_samples, chunk_size)]
    if n_jobs <= 1 or len(bounds) == 1:
        for b in bounds:
            yield fn(*b)
        return
    with ThreadPoolExecutor(n_jobs) as pool:
        # bounded read-ahead: at most 2 chunks per thread in flight
        pending = []
        for b in bounds:
            pending.append(pool.submit(fn, *b))
            if len(pending) >= 2 * n_jobs:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def sample_terms(labels, scores, kind, n_classes, losses, chunk_size=None, n_jobs=None,
                 correct=None):
    """Per-sample terms over all test samples: ``loss -> {column -> (N,) float64}``.

    One pass over ``scores``; every requested loss comes from the same chunk read. ``correct``:
    a ``(D, N)`` bool array, filled with whether each model's prediction is the label.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_samples = labels.shape[0]
    chunk_size = chunk_size or default_chunk_size(scores.shape, kind)
    n_jobs = n_jobs or default_jobs()
    reader = ChunkReader(scores)
    out = {loss: {col: np.empty(n_samples) for col in T.columns_of(loss) + _extra(loss)}
           for loss in losses}
    limit = T.finite_limit(scores.dtype)

    def one_chunk(start, stop):
        y = labels[start:stop]
        if kind == "preds":
            block = reader.copy(start, stop)
            _check_pred_range(block, n_classes)
            chunk = T.pred_terms(block, y, losses)
            if correct is not None:
                np.equal(block, y, out=correct[:, start:stop])
        else:
            hits = None if correct is None else correct[:, start:stop]
            chunk = T.block_terms(reader.float32(start, stop), y, losses, kind, limit,
                                  correct=hits)
        for loss, cols in chunk.items():
            for col, values in cols.items():
                out[loss][col][start:stop] = values

    with reader, _one_blas_thread():
        for _ in map_chunks(one_chunk, n_samples, chunk_size, n_jobs):
            pass
    return out


def _one_blas_thread():
    """Our threads split the work; BLAS threads on top of them only oversubscribe the cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own threads
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _extra(loss):
    return ("c2",) if loss == "zero-one" else ()


def _read_block(reader, start, stop, kind, n_classes):
    """One chunk: hard predictions as they are (checked to lie in 0..C-1), scores in float32."""
    if kind == "preds":
        block = reader.copy(start, stop)
        _check_pred_range(block, n_classes)
        return block
    return reader.float32(start, stop)


def _check_pred_range(block, n_classes):
    low, high = block.min(), block.max()
    if low < 0 or high >= n_classes:
        raise BvkitError(f"preds out of range: found {low}..{high}, classes are 0..{n_classes - 1}")


def replicate_class_sums(labels, scores, kind, n_classes, losses, model_weights, sample_counts,
                         chunk_size=None, n_jobs=None):
    """Class sums of per-sample terms for B bootstrap replicates over models and test samples.

    ``model_weights (B, D)``: model multiplicities; ``sample_counts (B, N)``: test-sample
    multiplicities. Returns ``loss -> {column -> (B, C) sums}``; divide by the class sizes.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_boot = model_weights.shape[0]
    chunk_size = chunk_size or max(1, default_chunk_size(scores.shape, kind) // 4)
    n_jobs = n_jobs or default_jobs()
    reader = ChunkReader(scores)
    limit = T.finite_limit(scores.dtype)
    sums = {loss: {col: np.zeros((n_classes, n_boot)) for col in T.columns_of(loss)}
            for loss in losses}

    def one_chunk(start, stop):
        y = labels[start:stop]
        block = _read_block(reader, start, stop, kind, n_classes)
        if kind == "preds":
            return start, stop, T.weighted_pred_terms(block, y, model_weights, losses)
        return start, stop, T.weighted_block_terms(block, y, model_weights, losses, kind, limit)

    with reader, _one_blas_thread():
        for start, stop, chunk in map_chunks(one_chunk, labels.shape[0], chunk_size, n_jobs):
            counts = sample_counts[:, start:stop]
            order = np.argsort(labels[start:stop], kind="stable")
            classes, first = np.unique(labels[start:stop][order], return_index=True)
            for loss, cols in chunk.items():
                for col in T.columns_of(loss):
                    weighted = (counts * cols[col])[:, order]
                    sums[loss][col][classes] += np.add.reduceat(weighted, first, axis=1).T
    return {loss: {col: s.T for col, s in cols.items()} for loss, cols in sums.items()}


def population_sample_terms(labels, scores, kind, n_classes, losses, chunk_size=None,
                            n_jobs=None, correct=None):
    """Per-sample population terms (:func:`bvkit.decomposition.population.jackknife_terms` of
    the kernel's plug-in terms over every model subset the jackknife needs) in one chunked
    pass (:func:`bvkit.decomposition.terms.subset_terms`: each chunk read once):
    ``(values, leave_one_out)``, ``values``: ``loss -> {column -> (N,)}`` holding the
    corrected columns, their ``<column>_plugin`` twins and zero-one's per-sample ``c2``;
    ``leave_one_out``: ``loss -> {column -> (D, N)}``, the corrected terms without model k.
    Beyond one kernel pass, each of the 1 + D + D(D-1)/2 model subsets (16 at D = 5) costs a
    log-sum-exp over ``(n, C)`` (cross-entropy) and a few ``(n,)`` sums."""
    labels = np.asarray(labels, dtype=np.int64)
    n_models, n_samples = scores.shape[:2]
    chunk_size = chunk_size or max(1, default_chunk_size(scores.shape, kind) // 2)
    n_jobs = n_jobs or default_jobs()
    reader = ChunkReader(scores)
    limit = T.finite_limit(scores.dtype)
    values = {loss: {col: np.empty(n_samples) for col in P.population_columns(loss) + _extra(loss)}
              for loss in losses}
    loo = {loss: {col: np.empty((n_models, n_samples)) for col in T.columns_of(loss)}
           for loss in losses}

    def one_chunk(start, stop):
        y = labels[start:stop]
        block = _read_block(reader, start, stop, kind, n_classes)
        hits = None if correct is None else correct[:, start:stop]
        term_fn = T.subset_terms(block, y, losses, kind, limit, correct=hits)
        with np.errstate(invalid="ignore"):
            result = P.jackknife_terms(term_fn, n_models)
        for loss, terms in result.items():
            for col in T.columns_of(loss):
                values[loss][col][start:stop] = terms.corrected[col]
                loo[loss][col][:, start:stop] = terms.corrected_loo[col]
            for col in P.CORRECTED[loss]:
                values[loss][P.plugin_column(col)][start:stop] = terms.plugin[col]
            if loss == "zero-one":
                values[loss]["c2"][start:stop] = terms.plugin["c2"]

    with reader, _one_blas_thread():
        for _ in map_chunks(one_chunk, n_samples, chunk_size, n_jobs):
            pass
    return values, loo
