#!/usr/bin/env bash
# DeepVoxels on a generated object at the paper's 512 px, end to end, for docs/benchmarks.md. One GPU call
# (about 8 minutes on one H200):
#
#   OUT=/some/folder bash benchmarks/gpu_deepvoxels.sh
#
# 1. bts-studio synth-deepvoxels: one chair in DeepVoxels' layout at 512 px: TRAIN_VIEWS (479) on the upper
#    hemisphere, TEST_VIEWS (250) on the upper-hemisphere test spiral (the released objects have 1000; 250 evenly
#    spaced views of the same kind of spiral keep the call under 9 minutes).
# 2. ns-train deepvoxels for TRAIN_SECONDS (300) of training steps (--pipeline.max-train-seconds); the peak GPU memory
#    of training is recorded by a wrapper.
# 3. ns-eval: PSNR/SSIM of the grid's renders on every test view, 5-px border cropped (502x502, as the paper), against
#    the nearest-training-view baseline on the same crops; ms per rendered frame.
# 4. benchmarks/deepvoxels_depth.py: the learned depth map against the exact depth of the generated object, a figure
#    (render | ground truth | learned depth | exact depth), ms per frame over TIMING_VIEWS and the render's peak memory.
#
# Writes 7 files to $OUT: deepvoxels_summary.md, deepvoxels_eval.json, deepvoxels_depth.json, deepvoxels_depth.png,
# deepvoxels_renders.png, config.yml, train_log.txt. Results are written as soon as they exist.
#
# Knobs (environment): PYTHON, RESOLUTION (512), TRAIN_VIEWS (479), TEST_VIEWS (250), TRAIN_SECONDS (300),
# MAX_STEPS (1000000), METHOD (deepvoxels), DEPTH_VIEWS (4), TIMING_VIEWS (50), WORKERS (0: one per core),
# EXTRA_TRAIN_ARGS (appended to ns-train's method arguments), WORK (scratch folder).
# CPU smoke test with tiny settings (about 3 minutes on 2 busy cores):
#   OUT=/tmp/dv_bench RESOLUTION=32 TRAIN_VIEWS=12 TEST_VIEWS=6 TRAIN_SECONDS=10 METHOD=deepvoxels-tiny \
#   DEPTH_VIEWS=2 TIMING_VIEWS=3 bash benchmarks/gpu_deepvoxels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/deepvoxels}
PY=${PYTHON:-python}
RESOLUTION=${RESOLUTION:-512}
TRAIN_VIEWS=${TRAIN_VIEWS:-479}
TEST_VIEWS=${TEST_VIEWS:-250}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
MAX_STEPS=${MAX_STEPS:-1000000}
METHOD=${METHOD:-deepvoxels}
DEPTH_VIEWS=${DEPTH_VIEWS:-4}
TIMING_VIEWS=${TIMING_VIEWS:-50}
WORKERS=${WORKERS:-0}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
export PYTHONUNBUFFERED=1
# This checkout's bts_studio first, also for `python benchmarks/...` (whose sys.path starts in benchmarks/).
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
# Register the plugin even where the installed bts-studio metadata predates the deepvoxels entry points.
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-deepvoxels=bts_studio.method_configs:deepvoxels,deepvoxels-tiny=bts_studio.method_configs:deepvoxels_tiny}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-deepvoxels-data=bts_studio.dataparser_configs:deepvoxels_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_deepvoxels

# 1. data
start=$SECONDS
"$PY" -m bts_studio.cli synth-deepvoxels "$WORK/data" --resolution "$RESOLUTION" --train-views "$TRAIN_VIEWS" \
  --validation-views 4 --test-views "$TEST_VIEWS" --workers "$WORKERS" --overwrite 2>&1 | tail -n 2 | tee -a "$LOG"
gen_s=$((SECONDS - start))
log "generated $TRAIN_VIEWS training and $TEST_VIEWS test views at ${RESOLUTION}px in ${gen_s} s"

# 2. training; the wrapper records the peak GPU memory after ns-train returns
start=$SECONDS
# shellcheck disable=SC2086
"$PY" -c "
import json, sys, torch
from nerfstudio.scripts.train import entrypoint
peak_file = sys.argv[1]
sys.argv = ['ns-train'] + sys.argv[2:]
try:
    entrypoint()
finally:
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    open(peak_file, 'w').write(json.dumps({'train_peak_memory_gib': peak}))
" "$WORK/train_peak.json" "$METHOD" --data "$WORK/data" --output-dir "$WORK/outputs" --experiment-name dv \
  --timestamp bench --vis tensorboard --viewer.quit-on-train-completion True --max-num-iterations "$MAX_STEPS" \
  --steps-per-save 100000000 --steps-per-eval-batch 100000000 --steps-per-eval-image 100000000 \
  --logging.steps-per-log 250 --pipeline.max-train-seconds "$TRAIN_SECONDS" $EXTRA_TRAIN_ARGS deepvoxels-data 2>&1 \
  | grep -v -E "Warning|warn\(|^ +(fx|cx|c2w|mask|self\._apply)" | tr '\r' '\n' | grep -v '^\s*$' | tail -n 40 >>"$LOG"
train_wall_s=$((SECONDS - start))
RUN="$WORK/outputs/dv/$METHOD/bench"
CONFIG="$RUN/config.yml"
cp "$CONFIG" "$OUT/config.yml"
CKPT=$(ls "$RUN"/nerfstudio_models/step-*.ckpt | tail -n 1)
log "training finished in ${train_wall_s} s wall; checkpoint $(basename "$CKPT"); $(cat "$WORK/train_peak.json")"

# 3. ns-eval on the test split
start=$SECONDS
"$PY" -m nerfstudio.scripts.eval --load-config "$CONFIG" --output-path "$OUT/deepvoxels_eval.json" \
  --render-output-path "$WORK/renders" 2>&1 | grep -v -E "Warning|warn\(" | tail -n 3 | tee -a "$LOG"
eval_s=$((SECONDS - start))
log "ns-eval took ${eval_s} s"

# 4. learned depth vs exact depth, render timing and memory
"$PY" benchmarks/deepvoxels_depth.py --load-config "$CONFIG" --views "$DEPTH_VIEWS" --timing-views "$TIMING_VIEWS" \
  --figure "$OUT/deepvoxels_depth.png" --output "$OUT/deepvoxels_depth.json" >/dev/null 2>>"$WORK/depth.err" \
  || { tail -n 20 "$WORK/depth.err" | tee -a "$LOG"; exit 1; }

# 5. summary table and a montage of test renders
"$PY" - "$OUT" "$WORK" "$CKPT" "$gen_s" "$train_wall_s" "$eval_s" "$TRAIN_SECONDS" <<'EOF'
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out, work, ckpt = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
gen_s, train_s, eval_s, budget = sys.argv[4:8]
evaluation = json.loads((out / "deepvoxels_eval.json").read_text())["results"]
depth = json.loads((out / "deepvoxels_depth.json").read_text())
peak = json.loads((work / "train_peak.json").read_text())["train_peak_memory_gib"]
steps = int(re.search(r"step-(\d+)", ckpt.name).group(1)) + 1  # step-N.ckpt holds steps 0..N
memory = "n/a" if peak is None else f"{peak:.1f} GiB"
render_memory = depth["render_peak_memory_gib"]
lines = [
    "# DeepVoxels on a generated chair (synth-deepvoxels)",
    "",
    f"Training: {steps} steps in a {budget} s budget; data generation {gen_s} s, training wall {train_s} s, "
    f"ns-eval {eval_s} s; {depth['device']}.",
    "",
    f"Test views: {evaluation['num_images']} (5-px border cropped, PSNR/SSIM as scikit-image), mean +- std.",
    "",
    "| method | PSNR | SSIM |",
    "|---|---|---|",
    f"| deepvoxels | {evaluation['psnr']:.2f} +- {evaluation.get('psnr_std', 0):.2f} | {evaluation['ssim']:.3f} |",
    f"| nearest training view | {evaluation['nearest_view_psnr']:.2f} +- {evaluation.get('nearest_view_psnr_std', 0):.2f}"
    f" | {evaluation['nearest_view_ssim']:.3f} |",
    "",
    f"Time per rendered {depth['image_side']}px frame (stored grid -> image, {depth['timed_views']} views): "
    f"{depth['ms_per_frame']:.1f} ms (ns-eval's loop: {evaluation['ms_per_frame']:.1f} ms); the paper reports 71 ms.",
    f"Peak GPU memory: training {memory}, rendering "
    + ("n/a" if render_memory is None else f"{render_memory:.2f} GiB") + ".",
    "",
    f"Learned depth (occlusion weights) vs exact depth on object pixels of {len(depth['views'])} test views: "
    f"mean |dz| {depth['depth_abs_error_mean']:.3f}, median {depth['depth_abs_error_median']:.3f} world units; "
    f"{100 * depth['depth_within_one_voxel']:.0f}% within one voxel ({depth['voxel_size']:.4f}).",
    "",
]
(out / "deepvoxels_summary.md").write_text("\n".join(lines))
print("\n".join(lines))
renders = sorted((work / "renders").glob("test_*.png"))[:4]
if renders:
    images = [np.asarray(Image.open(path).convert("RGB")) for path in renders]
    Image.fromarray(np.concatenate(images, axis=0)).save(out / "deepvoxels_renders.png")
EOF
log "done; results in $OUT"
