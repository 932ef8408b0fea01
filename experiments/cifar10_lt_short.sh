#!/usr/bin/env bash
# CIFAR-10-LT (IF=100), ResNet-32 family: one short schedule for ce, ldam-drw and ride (3 experts),
# run one after the other on the CPU; METHODS="bbn oltr lfme m2m" runs the paper's other
# baselines instead. The 200-epoch recipe's milestones scale with --epochs
# (bvkit.train.schedule.scale_epoch): for EPOCHS=8, warm-up 1 epoch, lr x0.01 from epoch 7
# and x0.0001 from epoch 8 (1-based), DRW and RIDE's class-wise temperature from epoch 7.
#
#   EPOCHS=8 nohup experiments/cifar10_lt_short.sh > /dev/null 2>&1 &
#   METHODS="bbn oltr" EPOCHS=8 nohup experiments/cifar10_lt_short.sh > /dev/null 2>&1 &
#
# Logs (one line per epoch) and each run's metrics.json / history.csv land in
# experiments/results/; checkpoints and predictions in runs/cifar10_lt_short/METHOD/ (ignored).
# Rerunning resumes every unfinished run from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS="${EPOCHS:-8}"
SEED="${SEED:-0}"
PYTHON="${PYTHON:-.venv/bin/python}"
RESULTS=experiments/results
RUNS="${RUNS:-runs/cifar10_lt_short}"
mkdir -p "$RESULTS" "$RUNS"
export BVKIT_DATA="${BVKIT_DATA:-/work/main/data-cache}"
# the 2 cores are shared with other jobs: one intra-op thread avoids oversubscription stalls
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
[[ -d "$BVKIT_DATA/cifar-10-batches-py" ]] || "$PYTHON" /work/shared/data/make_cifar10.py "$BVKIT_DATA"

train() {  # method, extra args...
  local method=$1; shift
  "$PYTHON" -m bvkit.train --dataset cifar10-lt --imbalance 100 --method "$method" "$@" \
    --epochs "$EPOCHS" --seed "$SEED" --device cpu --progress off --verbose --out "$RUNS/$method" \
    >> "$RESULTS/cifar10_lt_short_${method}.log" 2>&1
}

for method in ${METHODS:-ce ldam-drw ride}; do
  extra=()
  [[ $method == ride ]] && extra=(--experts 3)
  echo "[$(date -u +%FT%TZ)] start $method (epochs $EPOCHS)" >> "$RESULTS/cifar10_lt_short.log"
  # a failed call is retried: it resumes from the last checkpoint (or only re-evaluates)
  for attempt in 1 2 3 4 5 6; do
    train "$method" "${extra[@]}" && break
    [[ $attempt == 6 ]] && exit 1
    sleep 300
  done
  cp "$RUNS/$method/metrics.json" "$RESULTS/cifar10_lt_short_${method}_metrics.json"
  cp "$RUNS/$method/history.csv" "$RESULTS/cifar10_lt_short_${method}_history.csv"
  echo "[$(date -u +%FT%TZ)] done $method: $(tail -1 "$RESULTS/cifar10_lt_short_${method}.log")" \
    >> "$RESULTS/cifar10_lt_short.log"
done
