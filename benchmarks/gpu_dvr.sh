#!/usr/bin/env bash
# DVR on generated data, end to end, for docs/benchmarks.md. One GPU call (< 9 min on one H200):
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
NC_BREAKDOWN=${NC_BREAKDOWN:-1}
TF32=${TF32:-1}
# TF32=1: TF32 matmuls on CUDA (torch honours this variable), for the 512-wide decoder's fp32 GEMMs.
[ "$TF32" = 1 ] && export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
export PYTHONUNBUFFERED=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
# Register the plugin even where the installed bts-studio metadata predates the dvr entry points.
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-"dvr-combined=bts_studio.method_configs:dvr_combined,dvr=bts_studio.method_configs:dvr,dvr-depth=bts_studio.method_configs:dvr_depth,dvr-multiview=bts_studio.method_configs:dvr_multiview"}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-shapenet-dvr-data=bts_studio.dataparser_configs:shapenet_dvr_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_dvr
# time_for SECONDS: true when the step fits before DEADLINE (always without one), else logs the skip.
time_for() {
  [ "$DEADLINE" = 0 ] && return 0
  [ $((DEADLINE - SECONDS)) -ge "$1" ] && return 0
  log "skipped (needs ~$1 s, $((DEADLINE - SECONDS)) s left before DEADLINE=$DEADLINE)"
  return 1
}
quiet() { grep -v -E "Warning|warnings.warn|^ +(fx|cx|c2w|mask|self\._apply|@custom)" | tr '\r' '\n' | grep -v '^\s*$' || true; }

# 1. data
start=$SECONDS
"$PY" -m bts_studio.cli synth-shapenet "$WORK/data" --classes "$CLASS" --instances "$INSTANCES" --val-instances 1 \
  --test-instances "$TEST_INSTANCES" --format dvr --resolution "$RESOLUTION" --dvr-views "$VIEWS" \
  --dvr-input-views "$VIEWS" --dvr-input-resolution "$INPUT_RESOLUTION" --dtu-scene --dtu-views "$MV_VIEWS" \
  --overwrite 2>&1 | tail -n 1 | tee -a "$LOG"
gen_s=$((SECONDS - start))
log "generated $INSTANCES training + $TEST_INSTANCES test $CLASS and a $MV_VIEWS-view DTU-style scan in ${gen_s} s"

train() {  # train METHOD DATA NAME SECONDS ARGS...
  local method=$1 data=$2 name=$3 seconds=$4
  shift 4
  # shellcheck disable=SC2068
  "$PY" -m nerfstudio.scripts.train "$method" --data "$data" --output-dir "$WORK/outputs" --experiment-name "$name" \
    --timestamp bench --vis tensorboard --viewer.quit-on-train-completion True --max-num-iterations "$MAX_STEPS" \
    --steps-per-save 100000000 --steps-per-eval-batch 1000 --steps-per-eval-image 100000000 \
    --logging.steps-per-log 250 --pipeline.max-train-seconds "$seconds" \
    --optimizers.fields.optimizer.lr "$LR" --pipeline.mesh.resolution-0 "$MESH_RES0" \
    --pipeline.mesh.upsampling-steps "$MESH_STEPS" --pipeline.mesh.refinement-steps "$REFINE_STEPS" \
    --pipeline.eval-num-points "$EVAL_POINTS" \
    --pipeline.eval-views-per-object "$EVAL_VIEWS" $@ 2>&1 | quiet | tail -n 30 >>"$LOG"
}

# 2. single-view training
start=$SECONDS
# shellcheck disable=SC2086
train "$PRESET" "$WORK/data/dvr" cars "$TRAIN_SECONDS" --pipeline.datamanager.images-per-batch "$IMAGES_PER_BATCH" \
  --pipeline.datamanager.rays-per-image "$RAYS_PER_IMAGE" $EXTRA_TRAIN_ARGS
train_s=$((SECONDS - start))
CONFIG="$WORK/outputs/cars/$PRESET/bench/config.yml"
cp "$CONFIG" "$OUT/config.yml"
CKPT=$(ls "$WORK/outputs/cars/$PRESET/bench/nerfstudio_models/"step-*.ckpt | tail -n 1)
log "$PRESET trained in ${train_s} s wall; checkpoint $(basename "$CKPT")"

# 3. ns-eval (meshes + rendered views of the test cars)
start=$SECONDS
"$PY" -m nerfstudio.scripts.eval --load-config "$CONFIG" --output-path "$OUT/dvr_eval.json" 2>&1 | quiet | tail -n 3 >>"$LOG"
eval_s=$((SECONDS - start))
log "ns-eval took ${eval_s} s"
if [ "$UNREFINED_EVAL" = 1 ] && [ "$REFINE_STEPS" != 0 ] && time_for 120; then
  # The same checkpoint and meshes without DVR's refinement (meshes only), for the A/B row of the summary.
  sed -e 's/^\( *refinement_steps:\) .*/\1 0/' -e 's/^\( *eval_views_per_object:\) .*/\1 0/' "$CONFIG" \
    >"$WORK/config_unrefined.yml"
  grep -q "refinement_steps: 0" "$WORK/config_unrefined.yml" || log "config_unrefined.yml: refinement_steps not found"
  start=$SECONDS
  "$PY" -m nerfstudio.scripts.eval --load-config "$WORK/config_unrefined.yml" \
    --output-path "$WORK/dvr_eval_unrefined.json" 2>&1 | quiet | tail -n 3 >>"$LOG"
  log "meshes-only ns-eval without refinement took $((SECONDS - start)) s"
fi

# 4. the mean training shape
"$PY" benchmarks/dvr_baselines.py mean-shape --data "$WORK/data/dvr" --out "$OUT/dvr_mean_shape.json" \
  --resolution "$MEAN_RES" --num-points "$EVAL_POINTS" --refinement-steps "$REFINE_STEPS" 2>&1 | quiet \
  | tail -n 2 >>"$LOG"
log "mean-shape baseline done"
if [ "$NC_BREAKDOWN" = 1 ] && time_for 90; then
  # Where normal consistency differs (docs/dvr.md, "Normal consistency: where the gap is"): the run's test meshes
  # (ns-eval's extraction and refinement) and the mean shape, split by GT region; a table in the summary.
  "$PY" benchmarks/dvr_baselines.py nc-breakdown --source run --load-config "$CONFIG" --data "$WORK/data/dvr" \
    --out "$WORK/nc_run.json" --objects "$TEST_INSTANCES" --num-points "$EVAL_POINTS" 2>&1 | quiet | tail -n 1 >>"$LOG" \
    || log "nc-breakdown of the run failed"
  "$PY" benchmarks/dvr_baselines.py nc-breakdown --source mean-shape --data "$WORK/data/dvr" --out "$WORK/nc_mean.json" \
    --objects "$TEST_INSTANCES" --resolution "$MEAN_RES" --num-points "$EVAL_POINTS" 2>&1 | quiet | tail -n 1 >>"$LOG" \
    || log "nc-breakdown of the mean shape failed"
  log "normal-consistency breakdown done"
fi

# 5. multi-view fitting of the DTU-style scan, and its visual hull (SKIP_MULTIVIEW=1 leaves it out)
MV_CKPT=none
mv_train_s=0
if [ "$SKIP_MULTIVIEW" != 1 ]; then
start=$SECONDS
# shellcheck disable=SC2086
train dvr-multiview "$WORK/data/dtu/scan1" scan1 "$MV_TRAIN_SECONDS" \
  --pipeline.datamanager.images-per-batch "$MV_IMAGES_PER_BATCH" --pipeline.datamanager.rays-per-image "$MV_RAYS_PER_IMAGE" \
  $EXTRA_MV_ARGS
mv_train_s=$((SECONDS - start))
MV_CONFIG="$WORK/outputs/scan1/dvr-multiview/bench/config.yml"
MV_CKPT=$(ls "$WORK/outputs/scan1/dvr-multiview/bench/nerfstudio_models/"step-*.ckpt | tail -n 1)
"$PY" -m nerfstudio.scripts.eval --load-config "$MV_CONFIG" --output-path "$OUT/dvr_multiview_eval.json" 2>&1 \
  | quiet | tail -n 3 >>"$LOG"
"$PY" benchmarks/dvr_baselines.py visual-hull --data "$WORK/data/dtu/scan1" --out "$OUT/dvr_visual_hull.json" \
  --resolution "$HULL_RES" --num-points "$EVAL_POINTS" 2>&1 | quiet | tail -n 2 >>"$LOG"
log "dvr-multiview trained in ${mv_train_s} s wall ($(basename "$MV_CKPT")), evaluated, visual hull scored"
fi

# 6. an exported mesh and its picture
if time_for 60; then
start=$SECONDS
"$PY" -m bts_studio.cli export-mesh --load-config "$CONFIG" --object 0 --split test --output "$WORK/car_mesh.ply" \
  --overwrite 2>&1 | quiet | tail -n 1 | tee -a "$LOG"
log "export-mesh took $((SECONDS - start)) s (including loading the run)"
"$PY" benchmarks/dvr_baselines.py render --mesh "$WORK/car_mesh.ply" --out "$OUT/dvr_mesh.png" 2>&1 | quiet | tail -n 2 >>"$LOG" \
  || log "no mesh picture (empty mesh, or matplotlib failed)"
fi

# 7. summary
"$PY" - "$OUT" "$CKPT" "$MV_CKPT" "$gen_s" "$train_s" "$mv_train_s" "$PRESET" "$TRAIN_SECONDS" "$MV_TRAIN_SECONDS" \
  "$WORK/dvr_eval_unrefined.json" "$REFINE_STEPS" "$WORK/nc_run.json" "$WORK/nc_mean.json" <<'EOF'
import json
import re
import sys
from pathlib import Path

out, ckpt, mv_ckpt = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
gen_s, train_s, mv_train_s, preset, budget, mv_budget = sys.argv[4:10]
unrefined_path, refine_steps = Path(sys.argv[10]), int(sys.argv[11])
single = json.loads((out / "dvr_eval.json").read_text())["results"]
unrefined = json.loads(unrefined_path.read_text())["results"] if unrefined_path.is_file() else None
mean_shape = json.loads((out / "dvr_mean_shape.json").read_text())
has_multi = (out / "dvr_multiview_eval.json").is_file() and mv_ckpt != "none"
multi = json.loads((out / "dvr_multiview_eval.json").read_text())["results"] if has_multi else {}
hull = json.loads((out / "dvr_visual_hull.json").read_text()) if has_multi else {}
steps = lambda path: int(re.search(r"step-(\d+)", path).group(1))  # noqa: E731
keys = ["chamfer_l1", "chamfer_l1_x10", "accuracy", "completeness", "normal_consistency", "fscore"]
head = "| method | Chamfer-L1 | Chamfer-L1 x10 (paper units) | accuracy | completeness | normal consistency | F-score@0.01 |"
rule = "|---|" + "---|" * len(keys)
row = lambda name, values: "| " + name + " | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |"  # noqa: E731
lines = [
    "# DVR on generated data",
    "",
    f"Single view: `{preset}`, {steps(ckpt)} steps in a {budget} s budget (training wall {train_s} s; data "
    f"generation {gen_s} s). Test cars: {single.get('num_objects')}, input view 0; meshes by MISE + "
    f"{refine_steps} refinement steps (DVR's 30), 100k points.",
    "",
    head,
    rule,
    row(f"{preset} ({refine_steps} refinement steps)", single),
    *([row(f"{preset} without refinement", unrefined)] if unrefined else []),
    row("mean training shape (the baseline: unrefined)", mean_shape),
    *([row("mean training shape, refined on its trilinear field", mean_shape["refined"])]
      if "refined" in mean_shape else []),
    "",
    f"Rendered test views: PSNR {single.get('psnr', float('nan')):.2f}, SSIM {single.get('ssim', float('nan')):.3f}, "
    f"mask IoU {single.get('mask_iou', float('nan')):.3f}; {1000 * single.get('seconds_per_image', float('nan')):.1f} ms "
    f"per rendered image, {single.get('seconds_per_mesh', float('nan')):.2f} s per extracted mesh"
    + (f" ({unrefined.get('seconds_per_mesh', float('nan')):.2f} s without refinement)." if unrefined else "."),
    "",
]
if has_multi:
    lines += [
    f"Multi-view: `dvr-multiview` on the DTU-style scan, {steps(mv_ckpt)} steps in a {mv_budget} s budget "
    f"(training wall {mv_train_s} s).",
    "",
    head,
    rule,
    row("dvr-multiview", multi),
    row("visual hull of the masks", hull),
    "",
    f"Multi-view rendered (training) views: PSNR {multi.get('psnr', float('nan')):.2f}, SSIM {multi.get('ssim', float('nan')):.3f}.",
    "",
    ]
nc_paths = [Path(path) for path in sys.argv[12:14]]
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
log "done; results in $OUT"
