#!/usr/bin/env bash
# DVR on generated data, end to end, for docs/benchmarks.md. One GPU call (< 9 min on one H200), or several (STAGES):
#
#   OUT=/some/folder PYTHON=python3 bash benchmarks/gpu_dvr.sh
#
# 1. bts-studio synth-shapenet: a cars class in DVR's layout (256 px, 24 views per car, 24 img_choy2016 input
#    views at 64 px, depth, 100k-point pointcloud.npz) and a DTU-style scan of one more car (49 views).
# 2. ns-train $PRESET (dvr-combined: RGB + depth + masks) for TRAIN_SECONDS on the training cars.
# 3. ns-eval: per test car, input view 0 -> MISE mesh (32^3 -> 256^3) + DVR's 30 vertex-refinement steps, scored
#    with DVR's protocol (Chamfer-L1 raw and x10, accuracy, completeness, normal consistency, F-score@0.01) +
#    PSNR/SSIM of 4 rendered 256^2 views; seconds per mesh and per rendered image. Then (UNREFINED_EVAL=1) the same
#    meshes without refinement (a meshes-only ns-eval of a copy of config.yml with refinement_steps 0), for the
#    summary's A/B row.
# 4. benchmarks/dvr_baselines.py mean-shape: "the mean training shape" (mean visual-hull occupancy of the
#    training cars) scored the same way on the same test cars; also after REFINE_STEPS refinement steps on the
#    grid's trilinear field (a second row; the baseline's own row stays unrefined, docs/dvr.md).
# 5. ns-train dvr-multiview on the DTU-style scan for MV_TRAIN_SECONDS, ns-eval (mesh vs its pointcloud.npz),
#    against the visual hull of its masks (dvr_baselines.py visual-hull).
# 6. bts-studio export-mesh of the first test car + a small PNG of it (dvr_baselines.py render).
#
# Writes at most 8 files to $OUT: dvr_summary.md, dvr_eval.json, dvr_mean_shape.json, dvr_multiview_eval.json,
# dvr_visual_hull.json, dvr_mesh.png, config.yml, train_log.txt. Results are written as soon as they exist.
#
# Knobs (environment): PYTHON, CLASS (cars; cars-varied mixes sedans, hatchbacks, SUVs, vans, pickups, sports cars),
# INSTANCES (64), TEST_INSTANCES (8), RESOLUTION (256), VIEWS (24), INPUT_RESOLUTION (64), PRESET (dvr-combined),
# TRAIN_SECONDS (210), MV_TRAIN_SECONDS (90), MV_VIEWS (49), IMAGES_PER_BATCH (64), RAYS_PER_IMAGE (1024),
# MV_IMAGES_PER_BATCH (16), MV_RAYS_PER_IMAGE (2048), LR (1e-4, DVR's), EVAL_VIEWS (4), MESH_RES0 (32), MESH_STEPS (3),
# HULL_RES (128), MEAN_RES (64), EVAL_POINTS (100000), MAX_STEPS (1000000), EXTRA_TRAIN_ARGS / EXTRA_MV_ARGS (appended
# to ns-train's method arguments), WORK (scratch folder), SKIP_MULTIVIEW (0), TF32 (1: TF32 matmuls through
# TORCH_ALLOW_TF32_CUBLAS_OVERRIDE; 0: full fp32), REFINE_STEPS (30, DVR's vertex refinement; 0 off),
# UNREFINED_EVAL (1: also score the single-view meshes without refinement), NC_BREAKDOWN (1: normal consistency of the
# run's and the mean shape's test meshes by GT region, dvr_baselines.py nc-breakdown, as a table in the summary),
# DEADLINE (0: none; else seconds from the script's start by which it must end: the optional steps, i.e. the
# unrefined A/B eval, the NC breakdown and export-mesh with its picture, are skipped when too little time is left
# for them, so the summary is always written; a run of the 2026-11-29 evening was cut by its caller's timeout before
# its summary, losing the A/B row).
# LR (1e-4, DVR's): a CPU learning check (16 cars, `dvr` at width 64, 8 images x 128 pixels; docs/dvr.md) gives,
# after the field's early collapse to empty, training-car Chamfer-L1 0.039 -> 0.066 -> 0.054 -> 0.058 at steps
# 200..500 with 5e-4 (it oscillates) and 0.043 -> 0.035 -> 0.053 at steps 400..600 with 1e-4 (noisy too on that tiny
# batch). The H200 run whose test Chamfer got worse with more steps used 5e-4 and 64 cars, each seen ~2,000 times;
# INSTANCES of a few hundred at RESOLUTION 128 keep that down at about the same generation cost.
# TF32: only the 10-bit-mantissa products change (relative error ~1e-3); the analytic gradient's denominator
# df/dp . w is clamped at 1e-3 anyway, and TF32 ran 2,020 steps where fp32 ran 372 in the same time.
# The ImageNet ResNet-18 weights are not on the offline GPU machine: the encoder trains from scratch (a warning says
# so); pass EXTRA_TRAIN_ARGS="--pipeline.model.imagenet-weights FILE" where a copy exists.
# CPU smoke test with tiny settings:
#   OUT=/tmp/dvr_bench INSTANCES=3 TEST_INSTANCES=1 RESOLUTION=32 VIEWS=4 INPUT_RESOLUTION=32 MV_VIEWS=6 \
#   TRAIN_SECONDS=10 MV_TRAIN_SECONDS=5 IMAGES_PER_BATCH=2 RAYS_PER_IMAGE=64 MV_IMAGES_PER_BATCH=2 \
#   MV_RAYS_PER_IMAGE=64 EVAL_VIEWS=1 MESH_RES0=8 MESH_STEPS=1 HULL_RES=32 MEAN_RES=16 EVAL_POINTS=2000 \
#   EXTRA_TRAIN_ARGS="--pipeline.model.hidden-size 16 --pipeline.model.latent-dim 8" \
#   EXTRA_MV_ARGS="--pipeline.model.hidden-size 16 --pipeline.model.num-blocks 2" bash benchmarks/gpu_dvr.sh
# Stages and longer training than one call allows (shared bash: gpu_stages.sh). STAGES (default: all, in this
# order, as one call) names the stages to run: data (step 1), train (2), eval (3), baseline (4), breakdown (the NC
# breakdown of 4), multiview (5), mesh (6), summary (7); e.g. STAGES="data train", STAGES="train",
# STAGES="train eval baseline breakdown mesh summary".
# With a persistent WORK (on a warm device its /tmp survives between calls that follow within ~30 s):
# - data is kept when WORK already holds it from the same data knobs (a marker written after generation); data
#   knobs that differ from WORK's are refused (a resumed run must see the same cars).
# - train resumes from the newest checkpoint of WORK's run folder (ns-train --load-dir; the plugin trainer restores
#   step counter, optimizers, schedulers and the random generators: a resumed run draws what an uninterrupted one
#   would, tests/methods/test_dvr_resume.py). Each call trains TRAIN_SECONDS more; MAX_STEPS caps the total (it is
#   passed as the steps left, since nerfstudio's --max-num-iterations counts from the resumed step). The training
#   knobs (IMAGES_PER_BATCH, RAYS_PER_IMAGE, LR, TF32, EXTRA_TRAIN_ARGS) of a resume must be the first call's
#   (checked, as the data knobs); eval and mesh knobs may differ (the last call's config.yml is evaluated). Every
#   training stage ends with a checkpoint (atomic) of its last trained step and appends (steps at start, at end,
#   budget, wall seconds) to WORK/dvr_train_stages.tsv; the summary reports the totals and how often it resumed.
# - baseline reuses the mean-shape JSON of an earlier call in WORK (same MEAN_RES, EVAL_POINTS, REFINE_STEPS), or
#   MEAN_SHAPE_JSON=path (checked against INSTANCES, TEST_INSTANCES, MEAN_RES; ~40 s saved); breakdown likewise
#   reuses the mean shape's half. Results of every stage are also kept in WORK/results, which summary reads.
# RESERVE (0: off): with DEADLINE, the train stage's budget shrinks so that RESERVE seconds remain after it (for
# ns-train's start-up and final save, ~50 s on an H200, and the stages after it).
# Three chained calls on one warm machine (knob values for an H200 in docs/dvr.md, "Benchmark"):
#   WORK=/tmp/dvrwork STAGES="data train" ... bash benchmarks/gpu_dvr.sh
#   WORK=/tmp/dvrwork STAGES="train" ... bash benchmarks/gpu_dvr.sh
#   WORK=/tmp/dvrwork STAGES="train eval baseline breakdown mesh summary" DEADLINE=... bash benchmarks/gpu_dvr.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/dvr}
PY=${PYTHON:-python}
INSTANCES=${INSTANCES:-64}
TEST_INSTANCES=${TEST_INSTANCES:-8}
RESOLUTION=${RESOLUTION:-256}
VIEWS=${VIEWS:-24}
INPUT_RESOLUTION=${INPUT_RESOLUTION:-64}
PRESET=${PRESET:-dvr-combined}
CLASS=${CLASS:-cars}
TRAIN_SECONDS=${TRAIN_SECONDS:-210}
MV_TRAIN_SECONDS=${MV_TRAIN_SECONDS:-90}
MV_VIEWS=${MV_VIEWS:-49}
IMAGES_PER_BATCH=${IMAGES_PER_BATCH:-64}
RAYS_PER_IMAGE=${RAYS_PER_IMAGE:-1024}
MV_IMAGES_PER_BATCH=${MV_IMAGES_PER_BATCH:-16}
MV_RAYS_PER_IMAGE=${MV_RAYS_PER_IMAGE:-2048}
LR=${LR:-1e-4}
EVAL_VIEWS=${EVAL_VIEWS:-4}
MESH_RES0=${MESH_RES0:-32}
MESH_STEPS=${MESH_STEPS:-3}
HULL_RES=${HULL_RES:-128}
MEAN_RES=${MEAN_RES:-64}
EVAL_POINTS=${EVAL_POINTS:-100000}
MAX_STEPS=${MAX_STEPS:-1000000}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
EXTRA_MV_ARGS=${EXTRA_MV_ARGS:-}
SKIP_MULTIVIEW=${SKIP_MULTIVIEW:-0}
REFINE_STEPS=${REFINE_STEPS:-30}
UNREFINED_EVAL=${UNREFINED_EVAL:-1}
DEADLINE=${DEADLINE:-0}
RESERVE=${RESERVE:-0}
NC_BREAKDOWN=${NC_BREAKDOWN:-1}
TF32=${TF32:-1}
MEAN_SHAPE_JSON=${MEAN_SHAPE_JSON:-}
# shellcheck source=benchmarks/gpu_stages.sh
source benchmarks/gpu_stages.sh
stages_init gpu_dvr.sh "data train eval baseline breakdown multiview mesh summary"
if [ -n "$MEAN_SHAPE_JSON" ] && [ ! -f "$MEAN_SHAPE_JSON" ]; then
  echo "gpu_dvr.sh: MEAN_SHAPE_JSON=$MEAN_SHAPE_JSON: file not found (expected a dvr_mean_shape.json)" >&2
  exit 2
fi
# TF32=1: TF32 matmuls on CUDA (torch honours this variable), for the 512-wide decoder's fp32 GEMMs.
[ "$TF32" = 1 ] && export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
export PYTHONUNBUFFERED=1
PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
# Register the plugin even where the installed bts-studio metadata predates the dvr entry points.
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-"dvr-combined=bts_studio.method_configs:dvr_combined,dvr=bts_studio.method_configs:dvr,dvr-depth=bts_studio.method_configs:dvr_depth,dvr-multiview=bts_studio.method_configs:dvr_multiview"}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-shapenet-dvr-data=bts_studio.dataparser_configs:shapenet_dvr_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_dvr
log "stages: $STAGES"
# time_for SECONDS: true when the step fits before DEADLINE (always without one), else logs the skip.
time_for() {
  [ "$DEADLINE" = 0 ] && return 0
  [ $((DEADLINE - SECONDS)) -ge "$1" ] && return 0
  log "skipped (needs ~$1 s, $((DEADLINE - SECONDS)) s left before DEADLINE=$DEADLINE)"
  return 1
}
# What outlives a call in WORK: the data and its marker, the runs, the training stages' record and the results.
RESULTS="$WORK/results"
STAGES_TSV="$WORK/dvr_train_stages.tsv"
DATA_MARKER="$WORK/dvr_data_knobs.txt"
mkdir -p "$RESULTS"
keep() { cp "$OUT/$1" "$RESULTS/$1"; }  # keep NAME: a result of $OUT, also for a later call's summary
RUN="$WORK/outputs/cars/$PRESET/bench"
CONFIG="$RUN/config.yml"
MV_RUN="$WORK/outputs/scan1/dvr-multiview/bench"

# 1. data (kept when WORK already holds it from the same knobs)
data_knobs="class=$CLASS instances=$INSTANCES test=$TEST_INSTANCES resolution=$RESOLUTION views=$VIEWS"
data_knobs+=" input_resolution=$INPUT_RESOLUTION mv_views=$MV_VIEWS"
generate() {
  local start=$SECONDS
  "$PY" -m bts_studio.cli synth-shapenet "$WORK/data" --classes "$CLASS" --instances "$INSTANCES" --val-instances 1 \
    --test-instances "$TEST_INSTANCES" --format dvr --resolution "$RESOLUTION" --dvr-views "$VIEWS" \
    --dvr-input-views "$VIEWS" --dvr-input-resolution "$INPUT_RESOLUTION" --dtu-scene --dtu-views "$MV_VIEWS" \
    --overwrite 2>&1 | tail -n 1 | tee -a "$LOG"
  echo $((SECONDS - start)) >"$WORK/dvr_data_seconds.txt"
  log "generated $INSTANCES training + $TEST_INSTANCES test $CLASS and a $MV_VIEWS-view DTU-style scan in" \
    "$((SECONDS - start)) s"
}
data_stage "$DATA_MARKER" "$data_knobs" "$WORK/data" generate

train() {  # train METHOD DATA NAME SECONDS ITERATIONS ARGS...
  local method=$1 data=$2 name=$3 seconds=$4 iterations=$5
  shift 5
  "$PY" -m nerfstudio.scripts.train "$method" --data "$data" --output-dir "$WORK/outputs" --experiment-name "$name" \
    --timestamp bench --vis tensorboard --viewer.quit-on-train-completion True --max-num-iterations "$iterations" \
    --steps-per-save 100000000 --steps-per-eval-batch 1000 --steps-per-eval-image 100000000 \
    --logging.steps-per-log 250 --pipeline.max-train-seconds "$seconds" \
    --optimizers.fields.optimizer.lr "$LR" --pipeline.mesh.resolution-0 "$MESH_RES0" \
    --pipeline.mesh.upsampling-steps "$MESH_STEPS" --pipeline.mesh.refinement-steps "$REFINE_STEPS" \
    --pipeline.eval-num-points "$EVAL_POINTS" \
    --pipeline.eval-views-per-object "$EVAL_VIEWS" "$@" 2>&1 | quiet | tail -n 30 >>"$LOG"
}
need_run() { [ -f "$CONFIG" ] || fail "$RUN holds no trained run: run the train stage first"; }

# 2. single-view training, resumed from WORK's run when it has a checkpoint
if has_stage train; then
  first_step=$(steps_done "$RUN")
  # What makes the run the same run: a resume with other training knobs is refused (eval and mesh knobs may change).
  train_knobs="images=$IMAGES_PER_BATCH rays=$RAYS_PER_IMAGE lr=$LR tf32=$TF32 extra=$EXTRA_TRAIN_ARGS"
  resume=()
  if [ "$first_step" -gt 0 ]; then
    if [ ! -f "$WORK/dvr_train_knobs.txt" ] || knobs_differ "$WORK/dvr_train_knobs.txt" "$train_knobs"; then
      fail "$RUN was trained with '$(cat "$WORK/dvr_train_knobs.txt" 2>/dev/null)', this call asks for" \
        "'$train_knobs'; use the same knobs in every call, or another WORK"
    fi
    resume=(--load-dir "$RUN/nerfstudio_models")
    log "train: resuming $PRESET after step $((first_step - 1)) ($first_step steps done)"
  else
    : >"$STAGES_TSV"  # a new run: no earlier training stages
    echo "$train_knobs" >"$WORK/dvr_train_knobs.txt"
  fi
  # The results of the previous checkpoint are stale once it trains on.
  rm -f "$RESULTS/dvr_eval.json" "$RESULTS/dvr_eval_unrefined.json" "$RESULTS/nc_run.json"
  budget=$TRAIN_SECONDS
  if [ "$DEADLINE" != 0 ] && [ "$RESERVE" != 0 ]; then
    left=$((DEADLINE - SECONDS - RESERVE))
    if [ "$left" -lt "$budget" ]; then
      budget=$((left > 10 ? left : 10))
      log "train: budget cut to $budget s so that RESERVE=$RESERVE s remain before DEADLINE=$DEADLINE"
    fi
  fi
  if [ $((MAX_STEPS - first_step)) -le 0 ]; then
    log "train: skipped ($first_step steps done, MAX_STEPS=$MAX_STEPS)"
  else
    start=$SECONDS
    # shellcheck disable=SC2086
    train "$PRESET" "$WORK/data/dvr" cars "$budget" $((MAX_STEPS - first_step)) \
      --pipeline.datamanager.images-per-batch "$IMAGES_PER_BATCH" --pipeline.datamanager.rays-per-image "$RAYS_PER_IMAGE" \
      $EXTRA_TRAIN_ARGS "${resume[@]}"
    train_stage_done "$RUN" "$first_step" "$budget" "$start" "train: $PRESET"
  fi
  if [ -f "$CONFIG" ]; then cp "$CONFIG" "$OUT/config.yml"; fi
fi

# 3. ns-eval (meshes + rendered views of the test cars)
if has_stage eval; then
  need_run
  rm -f "$RESULTS/dvr_eval_unrefined.json"
  start=$SECONDS
  "$PY" -m nerfstudio.scripts.eval --load-config "$CONFIG" --output-path "$OUT/dvr_eval.json" 2>&1 | quiet | tail -n 3 >>"$LOG"
  keep dvr_eval.json
  log "eval: ns-eval of $(steps_done "$RUN") steps took $((SECONDS - start)) s"
  if [ "$UNREFINED_EVAL" = 1 ] && [ "$REFINE_STEPS" != 0 ] && time_for 120; then
    # The same checkpoint and meshes without DVR's refinement (meshes only), for the A/B row of the summary.
    sed -e 's/^\( *refinement_steps:\) .*/\1 0/' -e 's/^\( *eval_views_per_object:\) .*/\1 0/' "$CONFIG" \
      >"$WORK/config_unrefined.yml"
    grep -q "refinement_steps: 0" "$WORK/config_unrefined.yml" || log "config_unrefined.yml: refinement_steps not found"
    start=$SECONDS
    "$PY" -m nerfstudio.scripts.eval --load-config "$WORK/config_unrefined.yml" \
      --output-path "$RESULTS/dvr_eval_unrefined.json" 2>&1 | quiet | tail -n 3 >>"$LOG"
    log "eval: meshes-only ns-eval without refinement took $((SECONDS - start)) s"
  fi
fi

# 4. the mean training shape (the same for every run on these data: computed once per WORK, or MEAN_SHAPE_JSON)
# check_mean_shape FILE: true when FILE's mean shape is of these data's counts, MEAN_RES and refinement setting.
check_mean_shape() {
  "$PY" - "$1" "$INSTANCES" "$TEST_INSTANCES" "$MEAN_RES" "$REFINE_STEPS" <<'EOF'
import json
import sys

path, instances, test_instances, resolution, refine_steps = sys.argv[1], *map(int, sys.argv[2:])
found = json.loads(open(path).read())
want = {"num_train_objects": instances, "num_test_objects": test_instances, "resolution": resolution}
wrong = {key: found.get(key) for key, value in want.items() if found.get(key) != value}
if ("refined" in found) != (refine_steps > 0):
    wrong["refined row"] = "present" if "refined" in found else "absent"
if wrong:
    sys.exit(f"{path}: {wrong} do not match this run's {want}, REFINE_STEPS={refine_steps}")
EOF
}
mean_knobs="res=$MEAN_RES points=$EVAL_POINTS refine=$REFINE_STEPS"
if has_stage baseline; then
  start=$SECONDS
  if [ -n "$MEAN_SHAPE_JSON" ]; then
    check_mean_shape "$MEAN_SHAPE_JSON" 2>&1 | tee -a "$LOG" || fail "MEAN_SHAPE_JSON does not fit these data"
    [ "$MEAN_SHAPE_JSON" -ef "$OUT/dvr_mean_shape.json" ] || cp "$MEAN_SHAPE_JSON" "$OUT/dvr_mean_shape.json"
    keep dvr_mean_shape.json
    echo "$mean_knobs (from $MEAN_SHAPE_JSON)" >"$RESULTS/dvr_mean_shape.knobs"
    log "baseline: mean shape reused from MEAN_SHAPE_JSON=$MEAN_SHAPE_JSON"
  elif [ -f "$RESULTS/dvr_mean_shape.json" ] && [ "$(cat "$RESULTS/dvr_mean_shape.knobs" 2>/dev/null)" = "$mean_knobs" ]; then
    cp "$RESULTS/dvr_mean_shape.json" "$OUT/dvr_mean_shape.json"
    log "baseline: mean shape reused from an earlier call ($mean_knobs)"
  else
    "$PY" benchmarks/dvr_baselines.py mean-shape --data "$WORK/data/dvr" --out "$OUT/dvr_mean_shape.json" \
      --resolution "$MEAN_RES" --num-points "$EVAL_POINTS" --refinement-steps "$REFINE_STEPS" 2>&1 | quiet \
      | tail -n 2 >>"$LOG"
    keep dvr_mean_shape.json
    echo "$mean_knobs" >"$RESULTS/dvr_mean_shape.knobs"
    log "baseline: mean-shape baseline done in $((SECONDS - start)) s"
  fi
fi
if has_stage breakdown && [ "$NC_BREAKDOWN" = 1 ] && time_for 90; then
  # Where normal consistency differs (docs/dvr.md, "Normal consistency: where the gap is"): the run's test meshes
  # (ns-eval's extraction and refinement) and the mean shape, split by GT region; a table in the summary.
  need_run
  start=$SECONDS
  "$PY" benchmarks/dvr_baselines.py nc-breakdown --source run --load-config "$CONFIG" --data "$WORK/data/dvr" \
    --out "$RESULTS/nc_run.json" --objects "$TEST_INSTANCES" --num-points "$EVAL_POINTS" 2>&1 | quiet | tail -n 1 >>"$LOG" \
    || log "nc-breakdown of the run failed"
  nc_knobs="res=$MEAN_RES points=$EVAL_POINTS objects=$TEST_INSTANCES"
  if [ -f "$RESULTS/nc_mean.json" ] && [ "$(cat "$RESULTS/nc_mean.knobs" 2>/dev/null)" = "$nc_knobs" ]; then
    log "breakdown: the mean shape's half reused from an earlier call"
  else
    rm -f "$RESULTS/nc_mean.json"
    if "$PY" benchmarks/dvr_baselines.py nc-breakdown --source mean-shape --data "$WORK/data/dvr" \
      --out "$RESULTS/nc_mean.json" --objects "$TEST_INSTANCES" --resolution "$MEAN_RES" --num-points "$EVAL_POINTS" \
      2>&1 | quiet | tail -n 1 >>"$LOG"; then
      echo "$nc_knobs" >"$RESULTS/nc_mean.knobs"
    else
      log "nc-breakdown of the mean shape failed"
    fi
  fi
  log "breakdown: normal-consistency breakdown done in $((SECONDS - start)) s"
fi

# 5. multi-view fitting of the DTU-style scan, and its visual hull (SKIP_MULTIVIEW=1 leaves it out)
if has_stage multiview && [ "$SKIP_MULTIVIEW" != 1 ]; then
  rm -rf "$MV_RUN"  # a fresh fit each time (no resume: it is short)
  start=$SECONDS
  # shellcheck disable=SC2086
  train dvr-multiview "$WORK/data/dtu/scan1" scan1 "$MV_TRAIN_SECONDS" "$MAX_STEPS" \
    --pipeline.datamanager.images-per-batch "$MV_IMAGES_PER_BATCH" --pipeline.datamanager.rays-per-image "$MV_RAYS_PER_IMAGE" \
    $EXTRA_MV_ARGS
  mv_train_s=$((SECONDS - start))
  echo "$mv_train_s $MV_TRAIN_SECONDS" >"$RESULTS/multiview_train.txt"
  "$PY" -m nerfstudio.scripts.eval --load-config "$MV_RUN/config.yml" --output-path "$OUT/dvr_multiview_eval.json" 2>&1 \
    | quiet | tail -n 3 >>"$LOG"
  keep dvr_multiview_eval.json
  "$PY" benchmarks/dvr_baselines.py visual-hull --data "$WORK/data/dtu/scan1" --out "$OUT/dvr_visual_hull.json" \
    --resolution "$HULL_RES" --num-points "$EVAL_POINTS" 2>&1 | quiet | tail -n 2 >>"$LOG"
  keep dvr_visual_hull.json
  log "multiview: dvr-multiview trained in ${mv_train_s} s wall ($(steps_done "$MV_RUN") steps), evaluated, visual" \
    "hull scored; $((SECONDS - start)) s in all"
fi

# 6. an exported mesh and its picture
if has_stage mesh && time_for 60; then
  need_run
  start=$SECONDS
  "$PY" -m bts_studio.cli export-mesh --load-config "$CONFIG" --object 0 --split test --output "$WORK/car_mesh.ply" \
    --overwrite 2>&1 | quiet | tail -n 1 | tee -a "$LOG"
  log "mesh: export-mesh took $((SECONDS - start)) s (including loading the run)"
  "$PY" benchmarks/dvr_baselines.py render --mesh "$WORK/car_mesh.ply" --out "$OUT/dvr_mesh.png" 2>&1 | quiet | tail -n 2 >>"$LOG" \
    || log "no mesh picture (empty mesh, or matplotlib failed)"
fi

# 7. summary (of what WORK/results holds: this call's stages and earlier calls' on the same WORK)
if has_stage summary; then
"$PY" - "$OUT" "$RESULTS" "$STAGES_TSV" "$WORK/dvr_data_seconds.txt" "$PRESET" "$REFINE_STEPS" <<'EOF'
import json
import re
import sys
from pathlib import Path

out, results, stages_tsv, data_seconds = (Path(arg) for arg in sys.argv[1:5])
preset, refine_steps = sys.argv[5], int(sys.argv[6])


def load(name: str):
    path = results / name
    return json.loads(path.read_text()) if path.is_file() else None


def evaluated_steps(evaluation) -> int:
    """Training steps of the checkpoint an ns-eval JSON scored (step-N.ckpt holds steps 0..N)."""
    return int(re.search(r"step-(\d+)", evaluation["checkpoint"]).group(1)) + 1


single_eval, unrefined_eval = load("dvr_eval.json"), load("dvr_eval_unrefined.json")
single = single_eval["results"] if single_eval else None
unrefined = unrefined_eval["results"] if unrefined_eval else None
mean_shape = load("dvr_mean_shape.json")
multi_eval, hull = load("dvr_multiview_eval.json"), load("dvr_visual_hull.json")
stages = [[int(value) for value in line.split("\t")] for line in stages_tsv.read_text().splitlines()] if (
    stages_tsv.is_file()) else []  # fmt: skip
gen_s = data_seconds.read_text().strip() if data_seconds.is_file() else "?"
keys = ["chamfer_l1", "chamfer_l1_x10", "accuracy", "completeness", "normal_consistency", "fscore"]
head = "| method | Chamfer-L1 | Chamfer-L1 x10 (paper units) | accuracy | completeness | normal consistency | F-score@0.01 |"
rule = "|---|" + "---|" * len(keys)
row = lambda name, values: "| " + name + " | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |"  # noqa: E731
total_steps = stages[-1][1] if stages else 0
budget_s, wall_s = sum(stage[2] for stage in stages), sum(stage[3] for stage in stages)
resumed = sum(1 for stage in stages if stage[0] > 0)
lines = [
    "# DVR on generated data",
    "",
    f"Single view: `{preset}`, {total_steps} steps in {len(stages)} training stage(s), resumed {resumed} times: "
    f"{budget_s} s of training budget in all (training wall {wall_s} s, ns-train start-up and checkpoint saves "
    f"included; data generation {gen_s} s)."
    + (f" Evaluated after {evaluated_steps(single_eval)} steps." if single_eval else " Not evaluated yet.")
    + f" Meshes by MISE + {refine_steps} refinement steps (DVR's 30), 100k points.",
    "",
]
if len(stages) > 1:
    lines += ["| training stage | steps at start | steps at end | budget (s) | wall (s) |", "|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {a} | {b} | {c} | {d} |" for i, (a, b, c, d) in enumerate(stages)] + [""]
lines += [head, rule]
if single:
    lines.append(row(f"{preset} ({refine_steps} refinement steps)", single))
if unrefined:
    lines.append(row(f"{preset} without refinement", unrefined))
if mean_shape:
    lines.append(row("mean training shape (the baseline: unrefined)", mean_shape))
    if "refined" in mean_shape:
        lines.append(row("mean training shape, refined on its trilinear field", mean_shape["refined"]))
lines.append("")
if single:
    lines += [
        f"Test cars: {single.get('num_objects')}, input view 0. Rendered test views: PSNR "
        f"{single.get('psnr', float('nan')):.2f}, SSIM {single.get('ssim', float('nan')):.3f}, mask IoU "
        f"{single.get('mask_iou', float('nan')):.3f}; {1000 * single.get('seconds_per_image', float('nan')):.1f} ms "
        f"per rendered image, {single.get('seconds_per_mesh', float('nan')):.2f} s per extracted mesh"
        + (f" ({unrefined.get('seconds_per_mesh', float('nan')):.2f} s without refinement)." if unrefined else "."),
        "",
    ]
if multi_eval and hull:
    multi = multi_eval["results"]
    mv_wall, mv_budget = (results / "multiview_train.txt").read_text().split()
    lines += [
        f"Multi-view: `dvr-multiview` on the DTU-style scan, {evaluated_steps(multi_eval)} steps in a {mv_budget} s "
        f"budget (training wall {mv_wall} s).",
        "",
        head,
        rule,
        row("dvr-multiview", multi),
        row("visual hull of the masks", hull),
        "",
        f"Multi-view rendered (training) views: PSNR {multi.get('psnr', float('nan')):.2f}, "
        f"SSIM {multi.get('ssim', float('nan')):.3f}.",
        "",
    ]
nc_paths = [results / "nc_run.json", results / "nc_mean.json"]
if all(path.is_file() for path in nc_paths):
    nc = [json.loads(path.read_text())["mean"] for path in nc_paths]
    if all("axis" in row for row in nc):
        lines += ["Normal consistency by GT region (accuracy side / completeness side; `dvr_baselines.py nc-breakdown`):",
                  "", f"| region (GT share) | {preset} | mean training shape |", "|---|---|---|",
                  "| all | " + " | ".join(f"{row['accuracy_nc']:.3f} / {row['completeness_nc']:.3f}" for row in nc) + " |"]
        for group in ("axis", "part"):
            for region, entry in nc[1].get(group, {}).get("completeness", {}).items():
                sides = [(row.get(group, {}).get("accuracy", {}), row.get(group, {}).get("completeness", {})) for row in nc]
                cells = [f"{acc.get(region, {}).get('nc', float('nan')):.3f} / "
                         f"{comp.get(region, {}).get('nc', float('nan')):.3f}" for acc, comp in sides]
                lines.append(f"| {group} {region} ({entry['share']:.2f}) | " + " | ".join(cells) + " |")
        lines.append("")
(out / "dvr_summary.md").write_text("\n".join(lines))
print("\n".join(lines))
EOF
fi
log "done; results in $OUT"
