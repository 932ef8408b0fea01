"""Gather the GPU session's runs for the trip back (run.sh's last step): one JSON of every run's
metrics (CIFAR-10-LT reproduction and the D = 10 study) and one archive of their small files
(metrics.json, history.csv, predictions.npz, logs; no checkpoints).

    python experiments/gpu/collect.py WORK_DIR OUT_DIR"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

SMALL = ("metrics.json", "history.csv", "predictions.npz", "probe.json", "probe_logits.npz", "fidelity_probe.md")


def main(work: Path, out: Path) -> int:
    runs = {}
    for metrics in sorted(work.rglob("metrics.json")):
        runs[str(metrics.parent.relative_to(work))] = json.loads(metrics.read_text())
    (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    with tarfile.open(out / "runs.tar.gz", "w:gz") as archive:
        for path in sorted(work.rglob("*")):
            if path.is_file() and (path.name in SMALL or path.suffix in (".log", ".toml")):
                archive.add(path, arcname=str(path.relative_to(work)))
    for name, metrics in runs.items():
        accuracy = metrics.get("accuracy", {})
        print(f"{name}: all {accuracy.get('all')} many {accuracy.get('many')} medium {accuracy.get('medium')} "
              f"few {accuracy.get('few')}; train {metrics.get('train_seconds')} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
