"""Which runs of a study train together as one packed network (``bvkit.train.packing``).

Runs of one method that differ only by subset and seed can be packed: same results, faster on
a GPU. ``auto`` packs on CUDA only: on CPU a packed model trains slower per model than one
alone (experiments/results/bench_train_cpu.txt).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bvkit.errors import BvkitError
from bvkit.study.spec import PACK_MODES, StudySpec
from bvkit.train.devices import gpu_count, wants_gpu

if TYPE_CHECKING:
    from bvkit.study.planning import RunTask


def check_packing(pack: str | None, pack_size: int | None) -> None:
    if pack is not None and pack not in PACK_MODES:
        raise BvkitError(f"--pack must be one of {', '.join(PACK_MODES)}, got {pack!r}")
    if pack_size is not None and pack_size < 1:
        raise BvkitError(f"--pack-size must be >= 1, got {pack_size}")


def packs_on(mode: str, device: str) -> bool:
    """Whether ``mode`` packs runs on ``device``: auto = on CUDA only."""
    if mode == "never":
        return False
    if mode == "always":
        return True
    return str(device).startswith("cuda") or (wants_gpu(device) and gpu_count() > 0)


def group_packs(spec: StudySpec, tasks: list[RunTask], pack: str | None = None,
                pack_size: int | None = None) -> list[list[RunTask]]:
    """``tasks`` in packs: runs of one method label with the same settings but for the seed,
    on one device, up to ``pack_size`` a pack; unpackable methods (second stages, a teacher)
    and methods not packing on their device stay alone. Pack order follows ``tasks``."""
    groups: dict[tuple, list[RunTask]] = {}
    for i, task in enumerate(tasks):
        method = spec.method(task.label)
        size = pack_size or method.pack_size
        key: tuple = ("alone", i)
        if size > 1 and packs_on(pack or method.pack, task.device) and _packable(task):
            settings = {k: v for k, v in task.kwargs.items() if k != "seed"}
            key = ("pack", task.label, json.dumps(settings, sort_keys=True, default=str))
        groups.setdefault(key, []).append(task)
    packs = []
    for key, members in groups.items():
        size = (pack_size or spec.method(members[0].label).pack_size) if key[0] == "pack" else 1
        packs.extend(members[i:i + size] for i in range(0, len(members), size))
    return packs


def _packable(task: RunTask) -> bool:
    from bvkit.train.packing import packable

    return packable(task.recipe)
