#!/usr/bin/env bash
# A second, short GPU call: LDAM-DRW then CE at the published 200-epoch CIFAR-10-LT recipe, one
# after the other, each alone on the GPU, within CAP seconds in all (default 125); results and
# per-epoch logs under $OUT. Carry .gpu-data. Run from the repository root.
set -u
ROOT=$(pwd); OUT=${OUT:-$ROOT/gpu-out}; WORK=${WORK:-/tmp/bvkit-gpu}; mkdir -p "$OUT" "$WORK"
export PYTHONPATH="$ROOT" PYTHONUNBUFFERED=1 BVKIT_DATA="${BVKIT_DATA:-$WORK/data}"
START=$(date +%s); CAP=${CAP:-125}
python3 -c "
import importlib.util, sys
spec = importlib.util.spec_from_file_location('m', '.gpu-data/make_cifar10.py')
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.main(sys.argv[1])" "$BVKIT_DATA" > "$OUT/run.log" 2>&1
for METHOD in ldam-drw ce; do
  LEFT=$(( CAP - ($(date +%s) - START) )); [ "$LEFT" -lt 5 ] && break
  timeout "$LEFT" python3 experiments/gpu/repro.py "$METHOD" "$WORK/$METHOD" 2>&1 | grep -v "UserWarning\|run_backward" > "$OUT/$METHOD.log"
  echo "[$(( $(date +%s) - START ))s] $METHOD: $(tail -n 1 "$OUT/$METHOD.log")" | tee -a "$OUT/run.log"
  [ -f "$WORK/$METHOD/metrics.json" ] && cp "$WORK/$METHOD/metrics.json" "$OUT/${METHOD}_metrics.json"
done
