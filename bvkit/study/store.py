"""The study directory on disk: file locks, run states and the gathered outputs (written
atomically, ``bvkit.atomic``; subsets.npz by ``bvkit.data.subsets.save_subsets``).

```
DIR/spec.toml                 the spec, as given
DIR/subsets.npz               "subset_0" ... : training indices (into data.pool) of run d
DIR/runs/<run_id>/            one finished run (renamed from runs/<run_id>.tmp-* when complete):
                              metrics.json, predictions.npz, history.csv, run.json,
                              heldout.npz, snapshots.npz (stage one's), and checkpoint.pt
                              where a later stage reuses its stage one
DIR/runs/<run_id>.failed      the last error of a failed run, one line (retried on the next run)
DIR/runs/<run_id>.lock        held while a process trains that run
DIR/predictions/<method>.npz  labels, logits (D, N, C), train_counts, class_names (and
                              expert_logits (D, M, N, C) for a multi-expert method, and
                              expert_weights (D, M) for one with learned weights)
DIR/metrics.csv               one row per run
DIR/expert_usage.csv          routed runs only: method, subset, split, n_experts, share
DIR/.lock                     held while writing the shared files above
```
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from bvkit.atomic import TMP_MARK, temp_name  # noqa: F401  (temp_name: a run's temporary directory too)
from bvkit.data.profiles import ALL, SPLITS

RUNS = "runs"
PREDICTIONS = "predictions"
ACCURACY_KEYS = (ALL, *SPLITS)  # metrics.csv's accuracy columns, in their order
THRESHOLD_COLUMNS = ("many_threshold", "few_threshold")  # the shot thresholds the accuracy columns are split at
METRIC_COLUMNS = ("method", "subset", "seed", "run_id", "status", *ACCURACY_KEYS, *THRESHOLD_COLUMNS, "mflops",
                  "seconds", "error",
                  "stage_one", "train_accuracy", "epochs", "val_accuracy", "check_accuracy", "val_check_z")
USAGE_COLUMNS = ("method", "subset", "split", "n_experts", "share")


@contextlib.contextmanager
def file_lock(path: str | Path, blocking: bool = True) -> Iterator[bool]:
    """``flock`` on ``path`` (created if needed); yields False if not blocking and it is taken.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a lock never outlives
    its process. Lock files are never deleted: deleting one while another process waits on it
    would let a third process lock a fresh file beside it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def study_lock(study_dir: Path):
    """The directory lock: held briefly while writing the shared files, never while training."""
    study_dir.mkdir(parents=True, exist_ok=True)
    return file_lock(study_dir / ".lock")


def run_dir(study_dir: Path, run_id: str) -> Path:
    return study_dir / RUNS / run_id


def run_lock_path(study_dir: Path, run_id: str) -> Path:
    return study_dir / RUNS / f"{run_id}.lock"


def failed_path(study_dir: Path, run_id: str) -> Path:
    return study_dir / RUNS / f"{run_id}.failed"


def is_done(study_dir: Path, run_id: str) -> bool:
    return (run_dir(study_dir, run_id) / "metrics.json").is_file()


def run_state(study_dir: Path, run_id: str) -> tuple[str, str]:
    """("done" | "failed" | "running" | "pending", error line or "")."""
    if is_done(study_dir, run_id):
        return "done", ""
    failed = failed_path(study_dir, run_id)
    if failed.is_file():
        return "failed", failed.read_text(encoding="utf-8", errors="replace").strip()
    lock = run_lock_path(study_dir, run_id)
    if lock.exists():
        with file_lock(lock, blocking=False) as free:
            if not free:
                return "running", ""
    return "pending", ""


RESUMABLE = "checkpoint.pt"  # a run's epoch checkpoint (``bvkit.train.checkpoint.CHECKPOINT``)


def resumable(tmp: Path) -> bool:
    """A run's temporary directory that an interrupted process left with an epoch checkpoint."""
    return tmp.is_dir() and (tmp / RESUMABLE).is_file()


def clean_run_leftovers(study_dir: Path, run_id: str) -> Path | None:
    """Remove the run's half-written directories but the newest resumable one, which is
    returned (the run continues from its checkpoint); call only while holding the run's lock."""
    leftovers = sorted((study_dir / RUNS).glob(f"{run_id}{TMP_MARK}*"),
                       key=lambda tmp: (tmp / RESUMABLE).stat().st_mtime if resumable(tmp) else -1.0)
    keep = leftovers[-1] if leftovers and resumable(leftovers[-1]) else None
    for leftover in leftovers:
        if leftover != keep:
            shutil.rmtree(leftover, ignore_errors=True)
    if keep is not None:  # the temporary file of an atomic write the interruption cut short
        for stale in keep.rglob(f"*{TMP_MARK}*"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
    return keep


def clean_leftovers(study_dir: Path) -> list[Path]:
    """Remove what interrupted processes left behind; call while holding the directory lock.

    A run's temporary directory is removed only if nobody holds that run's lock (a live
    process may be training into it) and it holds no epoch checkpoint of a run not yet done (an
    interrupted run resumes from it, ``clean_run_leftovers``); temporary files of atomic writes are only ever written
    under the directory lock, so any found now are stale.
    """
    removed = []
    runs = study_dir / RUNS
    if runs.is_dir():
        for tmp in runs.glob(f"*{TMP_MARK}*"):
            run_id = tmp.name.split(TMP_MARK)[0]
            if not tmp.is_dir() or (resumable(tmp) and not is_done(study_dir, run_id)):
                continue
            with file_lock(run_lock_path(study_dir, run_id), blocking=False) as free:
                if free:
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed.append(tmp)
    for folder in (study_dir, study_dir / PREDICTIONS):
        if folder.is_dir():
            # bvkit.atomic's (name.tmp-host-pid-rand) and older versions' prediction writer's (.name.XXXX.tmp)
            for tmp in [*folder.glob(f"*{TMP_MARK}*"), *folder.glob(".*.tmp")]:
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
    return removed


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
