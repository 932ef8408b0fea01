#!/usr/bin/env bash
# One GPU session for issue 8 (nothing to install; < 8 minutes on one H100/H200):
#   1. decode CIFAR-10 from the carried .gpu-data/cifar10_jpeg_bytes.npz (make_cifar10.py logic)
#   2. bench_train.py on CUDA: K = 1, 4, 8, 16 packed ResNet-32 and RIDE-3, eager and compiled
#   3. CIFAR-10-LT IF=100 at the published 200-epoch recipe: CE, LDAM-DRW, RIDE-3, as three
#      processes sharing the GPU, each capped by a timeout (a run cut off writes no metrics)
#   4. a D = 10 CE study, packed 10 per pack, if time is left
# Results under $OUT (default ./gpu-out). Run from the repository root:
#   carry: .gpu-data (holding cifar10_jpeg_bytes.npz and, optional, make_cifar10.py)
#   bash experiments/gpu/run.sh            # the real thing
#   bash experiments/gpu/run.sh --smoke    # CPU dry run: 1 epoch, tiny, seconds
set -u
SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu-out}; mkdir -p "$OUT"
DATA=${GPU_DATA:-$ROOT/.gpu-data}
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export BVKIT_DATA="$DATA/bvkit"  # also avoids needing platformdirs
START=$(date +%s)
left() { echo $(( ${BUDGET:-450} - ($(date +%s) - START) )); }
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/run.log"; }

# --- stand-ins for optional packages the training path imports at module level ----------------
SHIMS="$DATA/shims"; mkdir -p "$SHIMS"
if ! $PY -c "import tqdm" 2>/dev/null; then
  mkdir -p "$SHIMS/tqdm"; : > "$SHIMS/tqdm/__init__.py"
  cat > "$SHIMS/tqdm/auto.py" <<'PYEOF'
class tqdm:  # stand-in: bvkit only draws bars on a TTY
    def __init__(self, *a, disable=True, **k): self.disable = True
    def update(self, n=1): pass
    def set_postfix(self, **k): pass
    def close(self): pass
PYEOF
  log "tqdm missing: using a silent stand-in"
fi
if ! $PY -c "import joblib" 2>/dev/null; then
  mkdir -p "$SHIMS/joblib"
  cat > "$SHIMS/joblib/__init__.py" <<'PYEOF'
import contextlib
def delayed(fn):  # stand-in: serial execution only (jobs = 1)
    return lambda *a, **k: (fn, a, k)
class Parallel:
    def __init__(self, n_jobs=1, **k): pass
    def __call__(self, calls):
        return (fn(*a, **k) for fn, a, k in calls)
@contextlib.contextmanager
def parallel_config(**k):
    yield
PYEOF
  log "joblib missing: using a serial stand-in"
fi
export PYTHONPATH="$PYTHONPATH:$SHIMS"

# --- 1. CIFAR-10 ---------------------------------------------------------------------------
if [ ! -f "$BVKIT_DATA/cifar-10-batches-py/test_batch" ]; then
  mkdir -p "$BVKIT_DATA"
  $PY - "$DATA/cifar10_jpeg_bytes.npz" "$BVKIT_DATA" <<'PYEOF' 2>&1 | tee -a "$OUT/run.log"
import importlib.util, sys, shutil
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
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee -a "$OUT/run.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee -a "$OUT/run.log"

if [ $SMOKE = 1 ]; then
  DEVICE=cpu; BENCH="--ks 1,2 --batch-size 8 --steps 1 --warmup 1"; EPOCHS="epochs=1 batch_size=64 model_kwargs.width=4 model_kwargs.blocks=1"
  N_MAX="--n-max 100"
else
  DEVICE=cuda; BENCH="--ks 1,4,8,16 --batch-size 128 --steps 20 --warmup 5"; EPOCHS=""; N_MAX=""
fi

# --- 2. throughput ---------------------------------------------------------------------------
timeout 150 $PY experiments/bench_train.py --device $DEVICE $BENCH --out "$OUT/bench_train_$DEVICE.txt" 2>&1 | tee -a "$OUT/run.log"
if [ $SMOKE = 0 ]; then
  timeout 120 $PY experiments/bench_train.py --device cuda --ks 1,8,16 --batch-size 128 --steps 20 --warmup 10 --compile \
      --out "$OUT/bench_train_cuda_compile.txt" 2>&1 | tail -n 12 | tee -a "$OUT/run.log"
fi

# --- 3. CIFAR-10-LT reproduction: three methods in parallel on the one GPU --------------------
CAP=$(( $(left) - 60 )); [ $SMOKE = 1 ] && CAP=300
log "reproduction: CE, LDAM-DRW, RIDE-3 (200 epochs unless --smoke), each capped at ${CAP}s"
for METHOD in ce ldam-drw ride; do
  timeout $CAP $PY - "$METHOD" "$OUT/repro/$METHOD" "$DEVICE" $EPOCHS > "$OUT/repro_$METHOD.log" 2>&1 <<'PYEOF' &
import json, sys, time
from bvkit.train import train
method, out, device, *settings = sys.argv[1:]
overrides = {}
for item in settings:
    key, value = item.split("=")
    overrides[key] = int(value)
kwargs = {"n_max": 100} if overrides else {}
start = time.perf_counter()
result = train(method, "cifar10-lt", imbalance=100.0, seed=0, out=out, device=device, progress=False,
               log=print, **kwargs, **overrides)
m = result.metrics
print(json.dumps({"method": method, "accuracy": m["accuracy"], "seconds": round(time.perf_counter() - start, 1)}))
PYEOF
done
wait
for METHOD in ce ldam-drw ride; do
  if [ -f "$OUT/repro/$METHOD/metrics.json" ]; then log "$METHOD: $(tail -n 1 "$OUT/repro_$METHOD.log")"
  else log "$METHOD: no metrics (cut off at ${CAP}s or failed): $(tail -n 2 "$OUT/repro_$METHOD.log" | tr '\n' ' ')"; fi
done

# --- 4. a packed D = 10 CE study, if time is left ------------------------------------------
if [ $SMOKE = 1 ] || [ "$(left)" -gt 120 ]; then
  STUDY_EPOCHS=$([ $SMOKE = 1 ] && echo 1 || echo 200)
  cat > "$OUT/ce_d10.toml" <<TOML
name = "ce-d10"
[data]
dataset = "cifar10-lt"
imbalance = 100.0
$([ $SMOKE = 1 ] && echo "n_max = 100")
[subsets]
scheme = "redraw"
count = 10
[train]
epochs = $STUDY_EPOCHS
device = "$DEVICE"
pack = "always"
pack_size = 10
$([ $SMOKE = 1 ] && echo 'model_width = 4
options = { "model_kwargs.blocks" = 1 }')
[[methods]]
name = "ce"
method = "ce"
TOML
  CAP=$(( $(left) - 15 )); [ $SMOKE = 1 ] && CAP=300
  T0=$(date +%s)
  timeout $CAP $PY -c "import sys; from bvkit.cli import main; sys.exit(main(sys.argv[1:]))" study run "$OUT/ce_d10.toml" --out "$OUT/ce_d10" 2>&1 | tail -n 5 | tee -a "$OUT/run.log"
  log "D = 10 CE study (packed 10): $(( $(date +%s) - T0 ))s wall-clock (cap ${CAP}s)"
fi
log "done"
