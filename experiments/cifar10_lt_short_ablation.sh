#!/usr/bin/env bash
# Why RIDE < LDAM-DRW at 8 epochs: RIDE's recipe adds 15-degree rotation to crop + flip, which
# slows fitting on a short schedule. Same run as experiments/cifar10_lt_short.sh, rotation off.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${EPOCHS:-8}"
PYTHON="${PYTHON:-.venv/bin/python}"
RESULTS=experiments/results
export BVKIT_DATA="${BVKIT_DATA:-/work/main/data-cache}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$PYTHON" -m bvkit.train --dataset cifar10-lt --imbalance 100 --method ride --experts 3 \
  --set augment.rotation=0 --epochs "$EPOCHS" --seed 0 --device cpu --progress off --verbose \
  --out runs/cifar10_lt_short/ride-norotation >> "$RESULTS/cifar10_lt_short_ride-norotation.log" 2>&1
cp runs/cifar10_lt_short/ride-norotation/metrics.json "$RESULTS/cifar10_lt_short_ride-norotation_metrics.json"
cp runs/cifar10_lt_short/ride-norotation/history.csv "$RESULTS/cifar10_lt_short_ride-norotation_history.csv"
