"""The chunked pass: validate prediction arrays, then compute per-sample terms chunk by chunk.

Test samples are processed in chunks on a thread pool (numpy releases the GIL), each chunk read
once into per-thread buffers (:class:`ChunkReader`), so resident memory stays at a few chunks
whatever the size of a memory-mapped input.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bvkit.decompose import terms as T
from bvkit.decompose.reader import ChunkReader
from bvkit.errors import BvkitError

KINDS = ("logits", "probs", "preds")
#: Float32 bytes a chunk of scores aims at: big enough to amortise Python overhead, small
#: enough that the kernel's passes over it stay in cache.
CHUNK_BYTES = 4 << 20


def resolve_losses(loss) -> tuple[str, ...]:
    """``"all"``, one loss name or a sequence of names -> loss names in canonical order."""
    names = (T.LOSSES if loss == "all" else (loss,)) if isinstance(loss, str) else tuple(loss)
    unknown = [name for name in names if name not in T.LOSSES]
    if unknown or not names:
        raise BvkitError(
            f"unknown loss {', '.join(map(str, unknown)) or '(none)'}: "
            f"choose from {', '.join(T.LOSSES)} or all"
        )
    return tuple(name for name in T.LOSSES if name in names)


def pick_scores(logits=None, probs=None, preds=None) -> tuple[str, np.ndarray]:
    """The one prediction array given, with its kind."""
    arrays = zip(KINDS, (logits, probs, preds), strict=True)
    given = [(kind, arr) for kind, arr in arrays if arr is not None]
    if len(given) != 1:
        names = ", ".join(kind for kind, _ in given) or "none"
        raise BvkitError(f"give exactly one of logits, probs or preds (got {names})")
    return given[0]


def check_inputs(labels, scores, kind, train_counts=None, class_names=None) -> int:
    """Validate shapes and dtypes (everything but the per-element checks); return C."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise BvkitError(f"labels must be a 1-D integer array, got shape {labels.shape} "
                         f"dtype {labels.dtype}")
    ndim = 2 if kind == "preds" else 3
    if scores.ndim != ndim:
        shape = "(D, N)" if kind == "preds" else "(D, N, C)"
        raise BvkitError(f"{kind} must have shape {shape}, got {tuple(scores.shape)}")
    if kind == "preds" and not np.issubdtype(scores.dtype, np.integer):
        raise BvkitError(f"preds must be integer class indices, got dtype {scores.dtype}")
    if kind != "preds" and not np.issubdtype(scores.dtype, np.floating):
        raise BvkitError(f"{kind} must be floating point, got dtype {scores.dtype}")
    n_models, n_samples = scores.shape[:2]
    if n_models < 2:
        raise BvkitError(f"{kind} hold {n_models} model(s); a decomposition needs at least 2")
    if labels.shape[0] != n_samples:
        raise BvkitError(f"labels hold {labels.shape[0]} samples but {kind} hold {n_samples}")
    if n_samples == 0:
        raise BvkitError("there are no test samples")
    n_classes = scores.shape[2] if kind != "preds" else None
    if n_classes == 0:
        raise BvkitError(f"{kind} have no classes (last axis of length 0)")
    for name, arr in (("train_counts", train_counts), ("class_names", class_names)):
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.ndim != 1:
            raise BvkitError(f"{name} must be 1-D, got shape {arr.shape}")
        if n_classes is None:
            n_classes = arr.shape[0]
        elif arr.shape[0] != n_classes:
            raise BvkitError(f"{name} has {arr.shape[0]} entries but there are {n_classes} classes")
    if train_counts is not None:
        counts = np.asarray(train_counts)
        if not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
            raise BvkitError("train_counts must be non-negative integers")
    if n_classes is None:  # hard predictions without class metadata
        n_classes = int(max(labels.max(), _chunked_extreme(scores, np.max))) + 1
    if labels.min() < 0 or labels.max() >= n_classes:
        raise BvkitError(f"labels out of range: found {labels.min()}..{labels.max()}, "
                         f"classes are 0..{n_classes - 1}")
    return n_classes


def _chunked_extreme(arr, reduce, step=1 << 16):
    return reduce([reduce(arr[:, i:i + step]) for i in range(0, arr.shape[1], step)])


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


def sample_terms(labels, scores, kind, n_classes, losses, chunk_size=None, n_jobs=None):
    """Per-sample terms over all test samples: ``loss -> {column -> (N,) float64}``.

    One pass over ``scores``; every requested loss comes from the same chunk read.
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
        else:
            chunk = T.block_terms(reader.float32(start, stop), y, losses, kind, limit)
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
        if kind == "preds":
            block = reader.copy(start, stop)
            _check_pred_range(block, n_classes)
            return start, stop, T.weighted_pred_terms(block, y, model_weights, losses)
        block = reader.float32(start, stop)
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
