#!/usr/bin/env bash
# One GPU session (nothing to install; about 8 minutes on one H100/H200):
#   1. decode CIFAR-10 from the carried .gpu-data/cifar10_jpeg_bytes.npz (make_cifar10.py logic)
#   1b. probe: the fidelity probe (experiments/gpu/probe.py): RIDE-3 at the published 200-epoch
#      recipe alone, then test / validation / unused pool images under every evaluation setting
#      (fidelity_probe.md, probe.json, probe_logits.npz)
#   2. ride: CIFAR-10-LT IF=100, RIDE-3 at the published 200-epoch recipe, alone on the GPU (timed;
#      only when STEPS names it: the probe trains the same run)
#   3. bench: bench_train.py, K = 1, 4, 8, 10, 16 packed ResNet-32 and RIDE-3, CUDA graphs; eager K = 1, 10
#   4. tests: graphed training steps against eager ones (tests/train/test_graphs.py)
#   5. baselines: LDAM-DRW and CE (200 epochs), each alone
#   5b. study: a D = 10 CE study (packed 10), only when STEPS names it (it needs a call of its own)
#   5c. others: BBN, OLTR, LFME, M2m at their 200-epoch recipes, only when STEPS names it
#   5d. balanced: CE on the balanced CIFAR-10 (IF = 1) at the same 200-epoch recipe, only when STEPS
#      names it: what this JPEG q75 copy costs against the published balanced ResNet-32 (~92.5 %),
#      the offset the CPU study's CE, LDAM-DRW and RIDE-3 all share (cifar10_lt_study_200.md)
#   6. collect: runs.json (every run's metrics) and runs.tar.gz (metrics, history, predictions, logs)
# Every step is capped by what is left of BUDGET seconds, so the results always come back.
# Results under $OUT (default ./gpu-out), at most 8 files. Run from the repository root:
#   carry: .gpu-data (holding cifar10_jpeg_bytes.npz and make_cifar10.py)
#   bash experiments/gpu/run.sh            # the real thing
#   bash experiments/gpu/run.sh --smoke    # CPU dry run: tiny models, 1 epoch, a minute
set -u
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-out}; mkdir -p "$OUT"
WORK=${WORK:-/tmp/bvkit-gpu}; mkdir -p "$WORK"
DATA=${GPU_DATA:-$ROOT/.gpu-data}
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BVKIT_DATA="${BVKIT_DATA:-$WORK/data}"
BUDGET=${BUDGET:-500}
STEPS=${STEPS:-probe baselines bench tests}  # also "ride", "compile", "study", "others", "balanced"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
cap() { local want=$1 reserve=$2 l; l=$(( $(left) - reserve )); [ "$l" -lt "$want" ] && want=$l; [ "$want" -lt 1 ] && want=1; echo "$want"; }
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/run.log"; }

# --- 1. CIFAR-10 ---------------------------------------------------------------------------
if [ ! -f "$BVKIT_DATA/cifar-10-batches-py/test_batch" ]; then
  mkdir -p "$BVKIT_DATA"
  $PY - "$DATA/cifar10_jpeg_bytes.npz" "$BVKIT_DATA" <<'PYEOF' 2>&1 | tee -a "$OUT/run.log"
import importlib.util, sys
from pathlib import Path
src, dest = Path(sys.argv[1]), Path(sys.argv[2])
script = src.parent / "make_cifar10.py"
if not script.is_file():
    script = Path("/work/shared/data/make_cifar10.py")
spec = importlib.util.spec_from_file_location("make_cifar10", script)
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
module.HERE = src.parent
module.main(str(dest))
print("decoded CIFAR-10 into", dest)
PYEOF
fi
log "$($PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')")"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null | tee -a "$OUT/run.log"

if [ $SMOKE = 1 ]; then
  DEVICE=cpu; BENCH="--ks 1,2 --batch-size 8 --steps 1 --warmup 1"; EAGER_KS=1
  SETTINGS="epochs=1 batch_size=64 model_kwargs.width=4 model_kwargs.blocks=1 --n-max 100"
else
  DEVICE=cuda; BENCH="--ks 1,4,8,10,16 --batch-size 128 --steps 20 --warmup 5"; EAGER_KS=1,10
  SETTINGS=""
fi

want() { [[ " $STEPS " == *" $1 "* ]]; }
repro() {  # method, cap seconds
  mkdir -p "$WORK/repro/$1"
  timeout "$2" $PY experiments/gpu/repro.py "$1" "$WORK/repro/$1" $SETTINGS > "$WORK/repro/$1/run.log" 2>&1
  log "$1: $(tail -n 1 "$WORK/repro/$1/run.log")"
}

# --- 1b. the fidelity probe (RIDE-3 training about 140 s on an H100, the evaluation grid ~30 s) -
if want probe; then
  log "fidelity probe (cap $(cap 260 240)s)"
  mkdir -p "$WORK/probe"
  timeout "$(cap 260 240)" $PY experiments/gpu/probe.py "$WORK/probe" $([ $SMOKE = 1 ] && echo --smoke) \
      > "$WORK/probe/run.log" 2>&1
  log "probe: $(tail -n 1 "$WORK/probe/run.log")"
  for f in fidelity_probe.md; do  # probe.json and probe_logits.npz travel in runs.tar.gz
    [ -f "$WORK/probe/$f" ] && cp "$WORK/probe/$f" "$OUT/"
  done
fi

# --- 2. RIDE-3, 200 epochs, alone (H100, 2026-11-27: 128.5 s training, 143 s wall) ----------
if want ride; then
  log "RIDE-3 alone (cap $(cap 170 300)s)"
  repro ride "$(cap 170 300)"
fi

# --- 3. throughput (H100: about 100 s for both tables) ---------------------------------------
if want bench; then
  timeout "$(cap 80 220)" $PY experiments/bench_train.py --device $DEVICE $BENCH --graphs \
      --out "$OUT/bench_train_${DEVICE}_graphs.txt" 2>&1 | tail -n 14 | tee -a "$OUT/run.log"
  timeout "$(cap 30 190)" $PY experiments/bench_train.py --device $DEVICE ${BENCH/--ks 1,4,8,10,16/--ks $EAGER_KS} \
      --out "$OUT/bench_train_${DEVICE}_eager.txt" 2>&1 | tail -n 8 | tee -a "$OUT/run.log"
  if want compile; then  # torch.compile inside the captured packed step, against the same graphed baseline
    timeout "$(cap 120 150)" $PY experiments/bench_train.py --device $DEVICE $BENCH --graphs --compile \
        --out "$OUT/bench_train_${DEVICE}_graphs_compile.txt" 2>&1 | tail -n 14 | tee -a "$OUT/run.log"
  fi
fi

# --- 4. CUDA tests: graphed steps against eager ones (H100: 18 s) ----------------------------
if want tests; then
  log "tests: $(timeout "$(cap 50 150)" $PY -m pytest -q -p no:cacheprovider tests/train/test_graphs.py > "$OUT/pytest_cuda.txt" 2>&1; tail -n 1 "$OUT/pytest_cuda.txt")"
fi

# --- 5. LDAM-DRW and CE, 200 epochs, each alone (H100: LDAM-DRW about 83 s of training) ------
if want baselines; then
  for METHOD in ldam-drw ce; do
    log "$METHOD alone (cap $(cap 130 25)s)"
    repro "$METHOD" "$(cap 130 25)"
  done
fi

# --- 5c. the paper's other baselines at their full recipes, each alone (only when STEPS names
#     "others"; untimed on a GPU so far: BBN is about 2 CE runs, OLTR 1.5, LFME 2.3, M2m's
#     40 generating epochs far more) -----------------------------------------------------------
if want others; then
  for METHOD in bbn oltr lfme m2m; do
    log "$METHOD alone (cap $(cap 400 25)s)"
    repro "$METHOD" "$(cap 400 25)"
  done
fi

# --- 5d. CE on the balanced set (50,000 images: about 4x an LT run; H100 estimate ~5 min) -----
if want balanced; then
  mkdir -p "$WORK/repro/ce-balanced"
  log "ce on balanced CIFAR-10 (cap $(cap 420 25)s)"
  timeout "$(cap 420 25)" $PY experiments/gpu/repro.py ce "$WORK/repro/ce-balanced" $SETTINGS --imbalance 1 \
      > "$WORK/repro/ce-balanced/run.log" 2>&1
  log "ce balanced: $(tail -n 1 "$WORK/repro/ce-balanced/run.log")"
fi

# --- 5b. a packed D = 10 CE study (about 250 s at the measured 100k model-img/s: its own call) -
if want study; then
  mkdir -p "$WORK/ce_d10"
  cat > "$WORK/ce_d10/ce_d10.toml" <<TOML
name = "ce-d10"
[data]
dataset = "cifar10-lt"
imbalance = 100.0
$([ $SMOKE = 1 ] && echo "n_max = 100")
[subsets]
scheme = "redraw"
count = 10
[train]
epochs = $([ $SMOKE = 1 ] && echo 1 || echo 200)
device = "$DEVICE"
pack = "always"
pack_size = 10
$([ $SMOKE = 1 ] && echo 'model_width = 4
options = { "model_kwargs.blocks" = 1 }')
[[methods]]
name = "ce"
method = "ce"
TOML
  T0=$(date +%s)
  timeout "$(cap 450 25)" $PY -m bvkit study run "$WORK/ce_d10/ce_d10.toml" --out "$WORK/ce_d10/study" > "$WORK/ce_d10/study.log" 2>&1
  RC=$?
  log "D = 10 CE study (packed 10, alone): $(( $(date +%s) - T0 ))s wall-clock, exit $RC: $(tail -n 2 "$WORK/ce_d10/study.log" | tr '\n' ' ')"
fi

# --- 6. collect ------------------------------------------------------------------------------
$PY experiments/gpu/collect.py "$WORK" "$OUT" 2>&1 | tee -a "$OUT/run.log"
log "done"
