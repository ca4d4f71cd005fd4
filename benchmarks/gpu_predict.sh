#!/usr/bin/env bash
# bts-studio predict on a trained bts-density model, for docs/benchmarks.md. One GPU call (~8 min on one H200):
#
#   OUT=/some/folder bash benchmarks/gpu_predict.sh
#
# 1. benchmarks/gpu_bts.sh with STOP_AFTER_TRAIN=1: synthetic KITTI-360 and TRAIN_SECONDS of bts-density training
#    (its knobs pass through: FRAMES, SCALE, RESNET, BATCH_GROUPS, ...).
# 2. benchmarks/predict_voxel_iou.py: `bts-studio predict --export voxels` on IOU_IMAGES test images with their true
#    intrinsics, IoU of the exported voxels against the generator's exact occupancy, next to "Depth + 4 m"
#    exported by the same functions.
# 3. `bts-studio predict` on one test image: the panel (input, depth, bird's-eye occupancy) and the fly-through.
#
# Writes at most 6 files to $OUT: train_log.txt, train_curve.csv (from gpu_bts.sh), predict_iou.json,
# predict_summary.md, predict_panel.png, predict_flythrough.mp4.
# Knobs (environment): PYTHON, TRAIN_SECONDS (240), IOU_IMAGES (16), VOXEL_SIZE (0.25), MAX_DEPTH (30), WORK,
# and every knob of gpu_bts.sh.
# CPU smoke test with tiny settings:
#   OUT=/tmp/predict_bench FRAMES=8 SCALE=0.1 TRAIN_SECONDS=20 RESNET=18 BATCH_GROUPS=1 RAYS=256 SAMPLES=16 \
#   TARGET_H=64 TARGET_W=160 TEST_EVERY=2 IOU_IMAGES=1 VOXEL_SIZE=1.0 TF32=0 bash benchmarks/gpu_predict.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/predict}
PY=${PYTHON:-$(command -v python3 || command -v python)}
IOU_IMAGES=${IOU_IMAGES:-16}
VOXEL_SIZE=${VOXEL_SIZE:-0.25}
MAX_DEPTH=${MAX_DEPTH:-30}
export TRAIN_SECONDS=${TRAIN_SECONDS:-240}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export WORK

STOP_AFTER_TRAIN=1 OUT="$OUT" PYTHON="$PY" bash benchmarks/gpu_bts.sh
LOG="$OUT/train_log.txt"
log() { echo "[gpu_predict $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
CONFIG="$WORK/outputs/synthetic/bts-density/bench/config.yml"

start=$SECONDS
"$PY" benchmarks/predict_voxel_iou.py --load-config "$CONFIG" --output-json "$OUT/predict_iou.json" \
  --max-images "$IOU_IMAGES" --voxel-size "$VOXEL_SIZE" --max-depth "$MAX_DEPTH" --work "$WORK/iou" 2>&1 \
  | grep -E "IoU|iou" | tail -n 40 >>"$LOG" || true
log "voxel IoU on $IOU_IMAGES images took $((SECONDS - start)) s"

# A glob, not `ls | head`: under pipefail, head closing the pipe early makes ls exit 141 and stops the script.
shopt -s nullglob
images=("$WORK"/KITTI-360/data_2d_raw/*/image_00/data_*/*.png)
IMAGE=${images[0]:-}
if [ -n "$IMAGE" ]; then
  start=$SECONDS
  "$PY" -m bts_studio.cli predict "$IMAGE" --output-dir "$WORK/panel" --load-config "$CONFIG" \
    --calibration "$WORK/KITTI-360/calibration/perspective.txt" --flythrough-frames 32 --overwrite 2>&1 \
    | grep -v -i warn | tail -n 5 >>"$LOG" || true
  folder="$WORK/panel/$(basename "$IMAGE" .png)"
  cp "$folder/panel.png" "$OUT/predict_panel.png" 2>/dev/null || log "no panel written"
  cp "$folder/flythrough.mp4" "$OUT/predict_flythrough.mp4" 2>/dev/null || log "no fly-through written"
  log "predict on $(basename "$IMAGE") took $((SECONDS - start)) s"
fi

"$PY" - "$OUT/predict_iou.json" "$OUT/predict_summary.md" <<'EOF'
import json
import sys
from pathlib import Path

report = json.loads(Path(sys.argv[1]).read_text())
lines = [
    f"Voxel IoU against the exact scene: {report['num_images']} test images, step {report['checkpoint_step']}, "
    f"{report['voxel_size_m']} m voxels, z {report['z_range_m'][0]}-{report['z_range_m'][1]} m, {report['device']}.",
    "",
    "| exported voxels | region | IoU | precision | recall |",
    "|---|---|---|---|---|",
]
for key, value in report["results"].items():
    model, region = key.split("/")
    lines.append(f"| {model} | {region} | {value['iou']:.3f} | {value['precision']:.3f} | {value['recall']:.3f} |")
Path(sys.argv[2]).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
