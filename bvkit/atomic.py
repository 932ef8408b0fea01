"""Atomic file writes: the one way bvkit replaces a file that a reader may open at any moment
(prediction files, checkpoints, a study's shared files, a run's progress file). Pure standard
library.

The policy (``atomic_write``): write to a temporary sibling, ``name.tmp-<host>-<pid>-<random>``
(``temp_name``: the same directory, so the rename stays on one file system; a name no other
writer uses, even on another host sharing the directory; ``TMP_MARK`` tells a leftover of an
interrupted write), flush it and ``fsync`` it, ``os.replace`` it onto the target, then
``fsync`` the directory where the platform allows it (``fsync_directory``). A reader sees the
old file or the new one, never half of one, and once the call returns the new file survives a
power cut. Should the write fail, the temporary file is removed and the error raised.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from pathlib import Path
from typing import IO, Any, Callable

TMP_MARK = ".tmp-"


def temp_name(path: str | os.PathLike) -> Path:
    """A sibling name of ``path`` no other writer uses (host + pid + random), recognisable as a
    leftover by ``TMP_MARK``: for the temporary file of an atomic write, and for a study run's
    temporary directory."""
    path = Path(path)
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f"{path.name}{TMP_MARK}{tag}")


def fsync_directory(path: str | os.PathLike) -> None:
    """Make the entries of directory ``path`` (a rename into it) durable; a no-op where a
    directory cannot be opened or synced (Windows, some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, durable: bool = True) -> Path:
    """Replace ``path`` by what ``write(file)`` writes to a binary file, atomically (the policy
    of the module docstring); returns ``path``.

    ``durable=False`` skips both ``fsync`` calls (the replacement stays atomic, but a power cut
    may lose it): only for a file that is rewritten often and whose loss costs nothing, such
    as a run's ``progress.json`` (rewritten after every epoch, read only to show progress;
    the epoch's checkpoint, written durably, is what a resumed run relies on).
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if durable:
        fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), durable=durable)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    """``text`` as UTF-8, atomically (``atomic_write``)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def write_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """``atomic_write_bytes`` unless ``path`` already holds exactly ``data``; whether it wrote."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True
