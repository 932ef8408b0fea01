#!/usr/bin/env bash
# RIDE-EA stage two on the finished 8-epoch RIDE run of experiments/cifar10_lt_short.sh:
# routers trained 5 epochs (batch 512, SGD lr 0.01 Nesterov, cosine, class-balanced) on the
# frozen 3-expert model; reports expert usage per shot split and the routed MFLOPs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RESULTS=experiments/results
export BVKIT_DATA="${BVKIT_DATA:-/work/main/data-cache}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$PYTHON" -m bvkit.train --dataset cifar10-lt --imbalance 100 --method ride-ea --experts 3 --epochs 8 \
  --stage-one runs/cifar10_lt_short/ride/checkpoint.pt --seed 0 --device cpu --progress off --verbose \
  --out runs/cifar10_lt_short/ride-ea >> "$RESULTS/cifar10_lt_short_ride-ea.log" 2>&1
cp runs/cifar10_lt_short/ride-ea/metrics.json "$RESULTS/cifar10_lt_short_ride-ea_metrics.json"
cp runs/cifar10_lt_short/ride-ea/history.csv "$RESULTS/cifar10_lt_short_ride-ea_history.csv"
