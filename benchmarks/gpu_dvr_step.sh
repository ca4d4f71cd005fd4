#!/usr/bin/env bash
# DVR training-step timing and host-sync count (issue 13), for docs/dvr.md. One GPU call (< 2 min on one H200):
#
#   OUT=/some/folder PYTHON=python3 bash benchmarks/gpu_dvr_step.sh
#
# Generates a small cars class (INSTANCES cars at RESOLUTION px, VIEWS views and input views), then runs
# benchmarks/dvr_step_bench.py on dvr-combined at the shapes of gpu_dvr.sh's run (IMAGES images x RAYS rays per step,
# decoder hidden 512, ResNet-18 encoder at 224 px, 16 proposals, TF32) and again at HALF_IMAGES images: the fixed
# per-step cost is 2 x t(HALF_IMAGES) - t(IMAGES). Each run prints ms/step of whole train_iteration calls (CUDA
# events, after WARMUP steps), of next_train alone and of the model alone (forward + losses + backward), the GPU's
# busy time in one step (so step - busy = the GPU waiting for the host), the host-sync ops per step and the Python
# lines that synchronised (torch.cuda.set_sync_debug_mode).
#
# Writes to $OUT: dvr_step.json, dvr_step_half.json, train_log.txt.
# Knobs (environment): PYTHON, INSTANCES (32), RESOLUTION (128), VIEWS (16), IMAGES (64), HALF_IMAGES (32), RAYS (768),
# HIDDEN (512), STEPS (30), WARMUP (10), TF32 (1), EXTRA_ARGS (appended to dvr_step_bench.py's arguments), WORK.
# CPU smoke test with tiny settings:
#   OUT=/tmp/dvr_step INSTANCES=4 RESOLUTION=32 VIEWS=4 IMAGES=4 HALF_IMAGES=2 RAYS=64 HIDDEN=32 STEPS=2 WARMUP=1 \
#   EXTRA_ARGS="--device cpu --latent 16 --input-size 32" bash benchmarks/gpu_dvr_step.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/dvr_step}
PY=${PYTHON:-python}
INSTANCES=${INSTANCES:-32}
RESOLUTION=${RESOLUTION:-128}
VIEWS=${VIEWS:-16}
IMAGES=${IMAGES:-64}
HALF_IMAGES=${HALF_IMAGES:-32}
RAYS=${RAYS:-768}
HIDDEN=${HIDDEN:-512}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-10}
TF32=${TF32:-1}
EXTRA_ARGS=${EXTRA_ARGS:-}
[ "$TF32" = 1 ] && export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
export PYTHONUNBUFFERED=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_dvr_step

bench() {  # bench IMAGES JSON
  # shellcheck disable=SC2086
  "$PY" benchmarks/dvr_step_bench.py --work "$WORK" --instances "$INSTANCES" --resolution "$RESOLUTION" \
    --views "$VIEWS" --images "$1" --rays "$RAYS" --hidden "$HIDDEN" --steps "$STEPS" --warmup "$WARMUP" \
    --out "$OUT/$2" $EXTRA_ARGS 2>&1 | quiet | sed -n '/^dvr step bench/,$p' | tee -a "$LOG"
}
start=$SECONDS
bench "$IMAGES" dvr_step.json
bench "$HALF_IMAGES" dvr_step_half.json
"$PY" - "$OUT" <<'PYEOF' | tee -a "$LOG"
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
full, half = (json.loads((out / name).read_text()) for name in ("dvr_step.json", "dvr_step_half.json"))
t_full, t_half = full["train_iteration_ms"], half["train_iteration_ms"]
print(
    f"train_iteration: {t_full:.1f} ms at {full['images_per_batch']} images, {t_half:.1f} ms at "
    f"{half['images_per_batch']}: fixed part 2 x t(half) - t(full) = {2 * t_half - t_full:.1f} ms per step"
)
PYEOF
log "done in $((SECONDS - start)) s; results in $OUT"
