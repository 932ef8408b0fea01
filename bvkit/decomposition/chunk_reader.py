"""Chunked reading of ``(D, N[, C])`` prediction arrays, memory-mapped ones in bounded memory."""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np

from bvkit.decomposition import terms as T
from bvkit.errors import BvkitError

#: Most file descriptors a reader opens (one per model's rows, shared beyond this).
MAX_STREAMS = 64


class ChunkReader:
    """Reads test-sample chunks ``[:, start:stop]`` of a ``(D, N[, C])`` array.

    An ``np.memmap`` (what ``np.load(mmap_mode="r")`` and ``load_predictions`` give) is read with
    positioned reads (``os.preadv``) into a per-thread staging buffer rather than through the
    mapping: none of the file enters the process's resident memory and there are no page
    faults. Each model's rows are read through their own file descriptor, so the kernel sees D
    sequential streams and reads ahead on each (cold reads overlap the computation). Other
    memory-mapped arrays are read through the mapping and their pages dropped
    (``MADV_DONTNEED``) once read. Use as a context manager.
    """

    def __init__(self, arr: np.ndarray):
        self.arr = arr
        self._local = threading.local()
        self._layout = _file_layout(arr) if hasattr(os, "preadv") else None
        self._fds = []
        if self._layout is not None:
            try:
                for _ in range(min(arr.shape[0], MAX_STREAMS)):
                    self._fds.append(os.open(self._layout[0], os.O_RDONLY))
                    if hasattr(os, "posix_fadvise"):
                        os.posix_fadvise(self._fds[-1], 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError as err:
                self.close()
                raise BvkitError(f"{self._layout[0]}: cannot read ({err.strerror})") from None
        self._map, self._map_address = (None, 0) if self._fds else _mapping_of(arr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        while self._fds:
            os.close(self._fds.pop())

    def float32(self, start, stop) -> np.ndarray:
        """The chunk as a float32 ``(D, stop - start, C)`` per-thread work buffer."""
        raw = self.raw(start, stop)
        block = self._buffer("work", raw.shape, np.float32)
        T.to_float32(raw, block)
        self._release(start, stop)
        return block

    def copy(self, start, stop) -> np.ndarray:
        """The chunk as a new array of the source dtype."""
        block = np.array(self.raw(start, stop))
        self._release(start, stop)
        return block

    def raw(self, start, stop) -> np.ndarray:
        """The chunk in the source dtype: a view, or a per-thread staging buffer."""
        if not self._fds:
            return self.arr[:, start:stop]
        _, first, stride_model, stride_sample = self._layout
        shape = (self.arr.shape[0], stop - start) + self.arr.shape[2:]
        staging = self._buffer("staging", shape, self.arr.dtype)
        nbytes = (stop - start) * stride_sample
        for d in range(shape[0]):
            fd = self._fds[d % len(self._fds)]
            view = memoryview(staging[d]).cast("B")
            offset, done = first + d * stride_model + start * stride_sample, 0
            while done < nbytes:
                got = os.preadv(fd, [view[done:]], offset + done)
                if got == 0:
                    raise BvkitError(f"{self._layout[0]}: file is shorter than its header says")
                done += got
        return staging

    def _buffer(self, name, shape, dtype):
        size = int(np.prod(shape))
        buf = getattr(self._local, name, None)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = np.empty(size, dtype)
            setattr(self._local, name, buf)
        return buf[:size].reshape(shape)

    def _release(self, start, stop):
        """Drop a mapped chunk's pages from the process (they stay in the page cache).

        The range is widened by the kernel's fault-around window (64 KiB), whose neighbouring
        pages a fault maps in too and would otherwise stay resident.
        """
        if self._map is None or self.arr.ndim < 2:
            return
        guard = 64 << 10
        page = mmap.PAGESIZE
        for d in range(self.arr.shape[0]):
            rows = self.arr[d, start:stop]
            if not rows.flags.c_contiguous:
                return
            begin = rows.__array_interface__["data"][0] - self._map_address
            first = max(0, (begin - guard) // page * page)
            last = min(-(-(begin + rows.nbytes + guard) // page) * page, len(self._map))
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)


def _mapping_of(arr):
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, mmap.mmap) and hasattr(base, "madvise"):
        return base, np.frombuffer(base, np.uint8).__array_interface__["data"][0]
    return None, 0


def _file_layout(arr):
    """``(filename, offset of [0, 0], model stride, sample stride)`` of an ``np.memmap`` whose
    samples are contiguous rows in the file, else None."""
    if not isinstance(arr, np.memmap) or not getattr(arr, "filename", None) or arr.ndim < 2:
        return None
    mapping, address = _mapping_of(arr)
    row_bytes = arr.itemsize * int(np.prod(arr.shape[2:]))
    inner_ok = arr.ndim == 2 or arr[0, 0].flags.c_contiguous
    if mapping is None or arr.strides[1] != row_bytes or not inner_ok or arr.size == 0:
        return None
    map_start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
    first = arr.__array_interface__["data"][0] - address + map_start
    return arr.filename, first, arr.strides[0], arr.strides[1]
