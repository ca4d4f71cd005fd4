#!/usr/bin/env bash
# bts-density on the default synthetic KITTI-360 set, end to end, for docs/benchmarks.md. One GPU call
# (~9 min on one H100, 16 cores; carry .whl made by ../shared/device/wheels.sh):
#
#   OUT=/some/folder bash benchmarks/gpu_bts.sh
#
# 1. bts-studio synth-kitti360 (SEQUENCES x FRAMES, SCALE; ray casting on the GPU).
# 2. ns-train bts-density (ResNet-50, 192x640, 16 groups x 4096 rays, Adam 1e-4) for TRAIN_SECONDS of training
#    (--pipeline.max-train-seconds), the loss every 10 steps to train_curve.csv. ImageNet weights only if
#    IMAGENET points at torchvision's resnet50-0676ba61.pth (or it sits in the torch hub cache); else from scratch.
# 3. ns-eval: per test frame group, KITTI depth metrics of the input view against lidar (80 m cap, no median
#    scaling) and PSNR/SSIM of the stereo partner rendered with the input image's colours.
# 4. benchmarks/bts_constant_baseline.py: the best constant depth (chosen on the test lidar) on the same images;
#    the check is abs_rel(model) < 0.5 * abs_rel(constant).
# 5. bts-studio camera-path + ns-render camera-path --camera-idx K: an rgb|depth fly-through from one train frame
#    (frames written as images, then encoded to mp4 with OpenCV: the GPU image has no ffmpeg binary).
# 6. bts-studio bench: training-step and full-frame render times at the official shapes.
#
# Writes at most 8 files to $OUT: bts_summary.md, bts_eval.json, bts_baseline.json, train_curve.csv,
# bts_flythrough.mp4, bts_depth_montage.png, bts_bench.json, train_log.txt. Each is written as soon as it exists.
#
# Knobs (environment): PYTHON, SEQUENCES (1), FRAMES (80), SCALE (0.52), TRAIN_SECONDS (240), MAX_STEPS (1000000),
# BATCH_GROUPS (16), RAYS (4096), SAMPLES (64), RESNET (50), LR (1e-4), TARGET_H (192), TARGET_W (640), TEST_EVERY (10),
# TF32 (1), IMAGENET (path), VIDEO_FRAMES (48), SOURCE_INDEX (middle train image), BENCH (1), EXTRA_TRAIN_ARGS, WORK,
# DEADLINE (560 s: the training budget shrinks so that everything ends by then), RESERVE (170 s kept for steps 3-5),
# DATA_SEED (0: synth-kitti360 --seed), STOP_AFTER_TRAIN (0; 1 ends after step 2), RESUME (0; 1 continues the run
# in WORK from its last checkpoint, skipping step 1, when WORK holds one; needs the same data knobs), CURVE_NAME
# (train_curve.csv). VIDEO_FRAMES=0 skips step 5.
# Longer training than one device call allows: back-to-back calls on the same warm machine, e.g.
#   WORK=/tmp/btswork STOP_AFTER_TRAIN=1 ... bash benchmarks/gpu_bts.sh             (generate + train)
#   WORK=/tmp/btswork RESUME=1 CURVE_NAME=train_curve_2.csv ... bash benchmarks/gpu_bts.sh   (train on + evaluate)
# CPU smoke test with tiny settings (about 4 minutes on 2 cores):
#   OUT=/tmp/bts_bench SCALE=0.06 FRAMES=8 TRAIN_SECONDS=15 RESNET=18 BATCH_GROUPS=2 RAYS=128 SAMPLES=16 TARGET_H=64 \
#   TARGET_W=160 TEST_EVERY=3 VIDEO_FRAMES=2 BENCH=0 bash benchmarks/gpu_bts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/bts}
PY=${PYTHON:-$(command -v python3 || command -v python)}
SEQUENCES=${SEQUENCES:-1}
FRAMES=${FRAMES:-80}
SCALE=${SCALE:-0.52}
TRAIN_SECONDS=${TRAIN_SECONDS:-240}
MAX_STEPS=${MAX_STEPS:-1000000}
BATCH_GROUPS=${BATCH_GROUPS:-16}
RAYS=${RAYS:-4096}
SAMPLES=${SAMPLES:-64}
RESNET=${RESNET:-50}
LR=${LR:-1e-4}
TARGET_H=${TARGET_H:-192}
TARGET_W=${TARGET_W:-640}
TEST_EVERY=${TEST_EVERY:-10}
TF32=${TF32:-1}
IMAGENET=${IMAGENET:-}
VIDEO_FRAMES=${VIDEO_FRAMES:-48}
BENCH=${BENCH:-1}
DEADLINE=${DEADLINE:-560}
RESERVE=${RESERVE:-170}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
STOP_AFTER_TRAIN=${STOP_AFTER_TRAIN:-0}
DATA_SEED=${DATA_SEED:-0}
RESUME=${RESUME:-0}
CURVE_NAME=${CURVE_NAME:-train_curve.csv}
export CURVE_NAME
export PYTHONUNBUFFERED=1
# This checkout's code wins over an installed (possibly older) bts-studio wheel, also for scripts in benchmarks/.
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
# Register the plugin even where the installed bts-studio metadata predates these entry points.
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-bts-density=bts_studio.method_configs:bts_density}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-kitti360-data=bts_studio.dataparser_configs:kitti360_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_bts

# 1. data (kept when resuming a run that has a checkpoint)
RUN="$WORK/outputs/synthetic/bts-density/bench"
resume_args=()
if [ "$RESUME" = "1" ] && ls "$RUN"/nerfstudio_models/step-*.ckpt >/dev/null 2>&1 && [ -d "$WORK/KITTI-360" ]; then
  resume_args=(--load-dir "$RUN/nerfstudio_models")
  gen_s=0
  log "resuming from $(ls "$RUN"/nerfstudio_models/step-*.ckpt | tail -n 1)"
else
  [ "$RESUME" = "1" ] && log "RESUME=1 but $WORK holds no run to resume: starting from scratch"
  start=$SECONDS
  "$PY" -m bts_studio.cli synth-kitti360 "$WORK/KITTI-360" --sequences "$SEQUENCES" --frames "$FRAMES" \
    --scale "$SCALE" --seed "$DATA_SEED" --overwrite 2>&1 | tail -n 3 | tee -a "$LOG"
  gen_s=$((SECONDS - start))
  log "generated $SEQUENCES x $FRAMES frames in ${gen_s} s"
fi

# 2. training (TF32 through a tiny wrapper: nerfstudio has no flag for it). The budget shrinks if generation was
#    slow, so that evaluation, baseline and video still fit before DEADLINE seconds.
left=$((DEADLINE - SECONDS - RESERVE))
if [ "$left" -lt "$TRAIN_SECONDS" ]; then
  TRAIN_SECONDS=$((left > 30 ? left : 30))
  log "training budget cut to ${TRAIN_SECONDS} s to finish by ${DEADLINE} s"
fi
weights=()
if [ -n "$IMAGENET" ]; then weights=(--pipeline.model.imagenet-weights "$IMAGENET"); fi
start=$SECONDS
# shellcheck disable=SC2086
"$PY" -c "
import sys, torch
torch.backends.cuda.matmul.allow_tf32 = bool(int(sys.argv[1]))
from nerfstudio.scripts.train import entrypoint
sys.argv = ['ns-train'] + sys.argv[2:]
entrypoint()
" "$TF32" bts-density --data "$WORK/KITTI-360" --output-dir "$WORK/outputs" --experiment-name synthetic \
  --timestamp bench --vis tensorboard --viewer.quit-on-train-completion True --max-num-iterations "$MAX_STEPS" \
  --steps-per-save 100000000 --steps-per-eval-batch 500 --steps-per-eval-image 100000000 --logging.steps-per-log 50 \
  --pipeline.max-train-seconds "$TRAIN_SECONDS" --pipeline.train-log-csv "$OUT/$CURVE_NAME" \
  --pipeline.train-log-every 10 --pipeline.datamanager.groups-per-batch "$BATCH_GROUPS" \
  --pipeline.datamanager.rays-per-group "$RAYS" --pipeline.model.resnet-layers "$RESNET" \
  --pipeline.model.num-samples "$SAMPLES" --optimizers.encoder.optimizer.lr "$LR" \
  --optimizers.density-mlp.optimizer.lr "$LR" "${weights[@]}" "${resume_args[@]}" $EXTRA_TRAIN_ARGS \
  kitti360-data --target-height "$TARGET_H" --target-width "$TARGET_W" --test-every "$TEST_EVERY" 2>&1 \
  | quiet | tail -n 60 >>"$LOG"
train_wall_s=$((SECONDS - start))
CONFIG="$RUN/config.yml"
CKPT=$(ls "$RUN"/nerfstudio_models/step-*.ckpt | tail -n 1)
log "training finished in ${train_wall_s} s wall; checkpoint $(basename "$CKPT")"
if [ "$STOP_AFTER_TRAIN" = "1" ]; then
  log "STOP_AFTER_TRAIN=1: done; resume with RESUME=1 WORK=$WORK"
  exit 0
fi

# 3. ns-eval
start=$SECONDS
"$PY" -m nerfstudio.scripts.eval --load-config "$CONFIG" --output-path "$OUT/bts_eval.json" \
  --render-output-path "$WORK/renders" 2>&1 | quiet | tail -n 3 | tee -a "$LOG"
eval_s=$((SECONDS - start))
log "ns-eval took ${eval_s} s"

# 4. constant-depth baseline on the same test images
"$PY" benchmarks/bts_constant_baseline.py --load-config "$CONFIG" --output "$OUT/bts_baseline.json" 2>&1 \
  | quiet | tail -n 3 >>"$LOG"

# Summary now (updated below with the render and bench numbers), so a run cut short still reports the metrics.
summary() {
  "$PY" - "$OUT" "$WORK" "$CKPT" "$gen_s" "$train_wall_s" "$eval_s" "$TRAIN_SECONDS" "$BATCH_GROUPS" "$RAYS" "$RESNET" \
    "$LR" "$TF32" "${IMAGENET:-none}" "$SEQUENCES" "$FRAMES" "$SCALE" <<'EOF'
import csv
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out, work, ckpt = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
gen_s, train_s, eval_s, budget, groups, rays, resnet, lr, tf32, imagenet, sequences, frames, scale = sys.argv[4:17]
model = json.loads((out / "bts_eval.json").read_text())["results"]
baseline = json.loads((out / "bts_baseline.json").read_text())
steps = int(re.search(r"step-(\d+)", ckpt.name).group(1)) + 1  # step-N.ckpt holds steps 0..N
names = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]
passed = model["abs_rel"] < 0.5 * baseline["abs_rel"]
lines = [
    "# bts-density on the synthetic KITTI-360 set",
    "",
    f"Data: {sequences} sequence(s) x {frames} frames at scale {scale} (generated in {gen_s} s). Training: {steps} "
    f"steps in a {budget} s budget ({train_s} s wall with setup), ResNet-{resnet}, {groups} groups x {rays} rays, "
    f"Adam lr {lr}, TF32 {tf32}, ImageNet weights: {imagenet}. ns-eval: {eval_s} s.",
    "",
    f"Depth on {baseline['num_images']} test images (KITTI protocol, 80 m cap, no median scaling, per-image mean):",
    "",
    "| predictor | " + " | ".join(names) + " |",
    "|---|" + "---|" * len(names),
    "| bts-density | " + " | ".join(f"{model[n]:.3f}" for n in names) + " |",
    f"| best constant ({baseline['constant_m']:.2f} m, chosen on the test lidar) | "
    + " | ".join(f"{baseline[n]:.3f}" for n in names) + " |",
    "",
    f"abs_rel check (model < 0.5 x constant): {'PASS' if passed else 'FAIL'} "
    f"({model['abs_rel']:.3f} vs {0.5 * baseline['abs_rel']:.3f}).",
    "",
    f"Novel view (stereo partner, colours from the input image, 5% border crop): PSNR {model.get('psnr', float('nan')):.2f},"
    f" SSIM {model.get('ssim', float('nan')):.3f}. Eval speed: {model.get('fps', float('nan')):.2f} rendered frames/s (encoding included).",
]
curve = out / os.environ.get("CURVE_NAME", "train_curve.csv")
if curve.exists():
    rows = list(csv.DictReader(curve.open()))
    if rows:
        def mean_loss(part):
            return sum(float(r["loss"]) for r in part) / len(part)
        k = max(1, len(rows) // 10)
        lines += ["", f"Training loss (mean of the first / last {k} logged steps): {mean_loss(rows[:k]):.4f} -> "
                  f"{mean_loss(rows[-k:]):.4f}; {len(rows)} rows in train_curve.csv."]
bench = out / "bts_bench.json"
if bench.exists():
    b = json.loads(bench.read_text())
    lines += ["", f"Speed ({b['device']}, bts-studio bench, random weights, ResNet-{b['resnet_layers']} "
              f"{b['height']}x{b['width']}, {b['groups']}x{b['rays_per_group']} rays x {b['num_samples']} samples): "
              f"training step {b['train_step_ms']:.1f} ms (peak {b.get('train_peak_memory_gib', 0):.1f} GiB), "
              f"encode {b['encode_ms']:.1f} ms, full-frame render {b['render_full_frame_ms']:.1f} ms."]
video = out / "bts_flythrough.mp4"
if video.exists():
    lines += ["", f"Fly-through: {video.name} (rgb | depth, rendered by ns-render camera-path --camera-idx)."]
(out / "bts_summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))

rows = []
for index in range(4):
    paths = [work / "renders" / f"eval_{key}_{index:04d}.png" for key in ("img", "depth", "novel_view")]
    if not all(p.exists() for p in paths):
        break
    img, depth, novel = (np.asarray(Image.open(p).convert("RGB")) for p in paths)
    w = depth.shape[1]
    rows.append(np.concatenate([img[:, :w], depth, novel[:, w:]], axis=1))  # input | depth | novel-view render
if rows:
    Image.fromarray(np.concatenate(rows, axis=0)).save(out / "bts_depth_montage.png")
EOF
}
summary | tee -a "$LOG"

# 5. fly-through video from one training frame
if [ "$VIDEO_FRAMES" -gt 0 ]; then
  SOURCE_INDEX=${SOURCE_INDEX:-$("$PY" -c "
import sys, yaml, bts_studio
from pathlib import Path
c = yaml.load(Path(sys.argv[1]).read_text(), Loader=yaml.Loader)
d = c.pipeline.datamanager.dataparser; d.data = Path(c.pipeline.datamanager.data)
o = d.setup().get_dataparser_outputs('train'); print(int(o.metadata['frame_groups'][len(o.metadata['frame_groups']) // 2, 0]))
" "$CONFIG" 2>>"$LOG" | tail -n 1 || true)}
  SOURCE_INDEX=${SOURCE_INDEX:-0}  # a failed lookup (logged above) must not cost the video
  "$PY" -m bts_studio.cli camera-path --load-config "$CONFIG" --source-index "$SOURCE_INDEX" --output "$WORK/path.json" \
    --frames "$VIDEO_FRAMES" --seconds 4 --overwrite 2>&1 | tail -n 5 >>"$LOG" || log "camera-path failed (see above)"
  shim="$WORK/shim"
  if ! command -v ffmpeg >/dev/null; then  # ns-render insists on an ffmpeg binary even for --output-format images
    mkdir -p "$shim" && printf '#!/bin/sh\nexit 1\n' >"$shim/ffmpeg" && chmod +x "$shim/ffmpeg"
  fi
  start=$SECONDS
  PATH="$shim:$PATH" "$PY" -m nerfstudio.scripts.render camera-path --load-config "$CONFIG" \
    --camera-path-filename "$WORK/path.json" --camera-idx "$SOURCE_INDEX" --output-path "$WORK/frames" \
    --output-format images --image-format png --rendered-output-names rgb depth 2>&1 | quiet | tail -n 2 >>"$LOG" \
    || log "ns-render failed (see train_log.txt)"
  "$PY" - "$WORK/frames" "$OUT/bts_flythrough.mp4" "$VIDEO_FRAMES" <<'EOF' >>"$LOG" 2>&1 || log "no video: OpenCV could not encode"
import sys
from pathlib import Path

import cv2

frames = sorted(Path(sys.argv[1]).glob("*.png"))
first = cv2.imread(str(frames[0]))
fps = max(1.0, len(frames) / 4.0)
writer = cv2.VideoWriter(sys.argv[2], cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.shape[1], first.shape[0]))
for frame in frames:
    writer.write(cv2.imread(str(frame)))
writer.release()
print(f"wrote {len(frames)} frames of {first.shape[1]}x{first.shape[0]} to {sys.argv[2]}")
EOF
  log "fly-through from train image $SOURCE_INDEX rendered in $((SECONDS - start)) s"
fi

# 6. speed at the official shapes
if [ "$BENCH" = "1" ] && [ $((DEADLINE - SECONDS)) -gt 45 ]; then
  "$PY" -m bts_studio.cli bench --output-json "$OUT/bts_bench.json" 2>&1 | quiet | tail -n 12 >>"$LOG" \
    || log "bench failed"
fi
summary >/dev/null
log "done; results in $OUT"
