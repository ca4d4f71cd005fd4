#!/usr/bin/env bash
# Issue #18: does bts-density see behind parked cars? Generate a synthetic KITTI-360 set, train bts-density for a
# fixed number of steps, score exact + official occupancy against "Depth + 4 m" with paired per-image differences,
# and render bird's-eye views. One GPU (CUDA_VISIBLE_DEVICES), one call, under DEADLINE seconds incl. generation:
#
#   OUT=/some/folder PYTHON=python3 SEED=0 FISHEYE=1 bash benchmarks/gpu_occluders.sh
#
# Two copies may run side by side on two GPUs of one host (each has its own WORK), e.g. SEED=0 and SEED=1, or
# FISHEYE=1 and FISHEYE=0 (the paper's ablation: same steps, same seed, no fisheye frames in the groups).
#
# 1. bts-studio synth-kitti360 (WORLD street|one-car, SEQUENCES x FRAMES at SCALE, --seed DATA_SEED).
# 2. ns-train METHOD up to STEPS steps (--machine.seed SEED; kitti360-data --use-fisheye FISHEYE), stopped early only
#    if the DEADLINE would be missed (the summary says how many steps were reached); loss to train_curve.csv. With
#    STAGES and a persistent WORK, one run's training can be split over chained calls (below).
# 3. benchmarks/gpu_occupancy.sh: eval-occupancy --variant both --baseline depth+4m on the test split, and
#    render-bev (input | depth | model | depth+4m | ground truth).
# 4. occluders_summary.md: per variant, model and Depth + 4 m with per-image standard errors, and the paired
#    per-image differences (model minus baseline) of O_acc, IE_acc and IE_rec with their standard errors.
#    Across calls and arms (a chained run evaluated after each call; FISHEYE=1 beside FISHEYE=0), each call's
#    occupancy.json feeds benchmarks/occluder_curves.py: metrics against steps, and the arms paired image by image.
#
# Files in $OUT (at most 7): occluders_summary.md, occupancy.md, occupancy.json, bev_montage.png, bev.mp4,
# train_curve.csv, train_log.txt.
#
# Knobs (environment): PYTHON, WORLD (street), SEQUENCES (2), FRAMES (100), SCALE (0.52), DATA_SEED (0), TEST_EVERY
# (5), SEED (0: --machine.seed), FISHEYE (1), METHOD (bts-density), STEPS (2000), RESNET (50), BATCH_GROUPS (16),
# RAYS (4096), SAMPLES (64), LR (1e-4), NEAR (3.0: ray sampling start and inverse-depth code near plane, metres;
# BTS 3; benchmarks/occluder_signal.py shows why 1.0 is worth a run), TARGET_H (192), TARGET_W (640), TF32 (1), IMAGENET (path to torchvision's
# resnet weights; none = from scratch), BEV_IMAGES (8), AUTOMASK (0; 1: --pipeline.model.automask True), HEAD_LR
# (unset; set: the decoder in its own optimizer group, decoder and density MLP at HEAD_LR, the ResNet at LR),
# EXTRA_TRAIN_ARGS (before the dataparser),
# EXTRA_DATA_ARGS (kitti360-data options), DEADLINE (510 s), RESERVE (170 s kept for steps 3-4), WORK, THREADS
# (torch intra-op threads: 1 on the CPU, torch's default on a GPU), IE_REC_FLOOR, O_REC_FLOOR and O_ACC_FLOOR (the
# one-car check).
# CPU smoke test (passes; 10-16 min on the shared 2-core box at load 10-15, mostly eval-occupancy and render-bev):
#   OUT=/tmp/occl_smoke SEQUENCES=1 FRAMES=16 SCALE=0.06 STEPS=4 METHOD=bts-density-tiny RESNET=18 BATCH_GROUPS=1 \
#   RAYS=128 SAMPLES=8 TARGET_H=64 TARGET_W=160 TEST_EVERY=4 BEV_IMAGES=2 bash benchmarks/gpu_occluders.sh
# The one-car regression check (issue #18): the three floors IE_REC_FLOOR, O_REC_FLOOR and O_ACC_FLOOR (all or
# none; none: no check) make the summary end with "One-car check at N steps: ... PASS|FAIL" and the script exit 3
# on FAIL, or when the summary finds no evaluation to check. It passes when the mean exact IE_rec, O_rec and O_acc
# reach their floors. IE_rec alone passes a field empty everywhere in the cuboid (IE_rec 1.0, O_rec 0); IE_rec and
# O_rec pass an untrained field, occupied at chance in a third of the cuboid (O_acc 0.73).
# benchmarks/onecar_check.sh sets the check's knobs and floors; the runs behind them are in docs/benchmarks.md
# ("The one-car check").
# Stages and longer training than one call allows (as benchmarks/gpu_dvr.sh; shared bash in gpu_stages.sh). STAGES
# (default: all, in this order, as one call) names the stages to run: data (step 1), train (2), eval (3), summary (4).
# With a persistent WORK (a warm device machine keeps its /tmp between calls that follow within ~30 s):
# - data is kept when WORK holds it from the same data knobs (WORLD SEQUENCES FRAMES SCALE DATA_SEED; a marker
#   written after generation); other data knobs are refused (exit 1).
# - train resumes from the newest checkpoint of WORK's run (ns-train --load-dir; the plugin trainer restores the
#   step, optimizers, schedulers and random generators, and a time-budget stop saves the last trained step). STEPS
#   stays the run's absolute target (passed as the steps left: nerfstudio 1.1.5's --max-num-iterations counts from
#   the resumed step); each call trains until STEPS or its budget (DEADLINE - elapsed - RESERVE, >= 30 s). The
#   training knobs (METHOD SEED FISHEYE BATCH_GROUPS RAYS SAMPLES RESNET LR NEAR TARGET_H TARGET_W TEST_EVERY TF32
#   IMAGENET EXTRA_TRAIN_ARGS EXTRA_DATA_ARGS) of a resume must be the first call's (else exit 1). Each stage appends
#   (steps at start, at end, budget s, wall s) to WORK/occl_train_stages.tsv and writes its own training-curve CSV
#   in WORK/curves (the trainer starts its CSV afresh in every process); $OUT/train_curve.csv is their concatenation
#   (one header, seconds continued). The summary reports total steps, summed budget, per-stage steps and wall, and
#   the resume count. eval scores the newest checkpoint; summary reads WORK's results, so it may run in a later call.
# CPU smoke of a chained run (the tiny knobs above, one WORK; 3 calls, 17 s + 43 s + 80 s on the shared box):
#   export WORK=/tmp/occl_chain SEQUENCES=1 FRAMES=16 SCALE=0.06 METHOD=bts-density-tiny RESNET=18 BATCH_GROUPS=1 \
#     RAYS=128 SAMPLES=8 TARGET_H=64 TARGET_W=160 TEST_EVERY=4 BEV_IMAGES=2 OMP_NUM_THREADS=1
#   OUT=/tmp/occl_c1 STAGES="data train" STEPS=4 nice bash benchmarks/gpu_occluders.sh           # steps 0 -> 4
#   OUT=/tmp/occl_c2 STAGES=train STEPS=400 DEADLINE=0 RESERVE=0 nice bash benchmarks/gpu_occluders.sh  # 30 s budget
#   OUT=/tmp/occl_c3 STAGES="train eval summary" STEPS=400 DEADLINE=0 RESERVE=0 nice bash benchmarks/gpu_occluders.sh
# GPU: the street set, three chained calls of ~520 s on one warm machine (~1,150 s of training in all, ~12k steps at
# ~92 ms/step; STEPS=12000 is the target, the budgets cut it). Each call is one device command:
#   P='python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;'
#   $P WORK=/tmp/occl0 OUT=$OUT/s0 PYTHON=python3 SEED=0 STEPS=12000 STAGES="data train" RESERVE=60 bash benchmarks/gpu_occluders.sh
#   $P WORK=/tmp/occl0 OUT=$OUT/s0 PYTHON=python3 SEED=0 STEPS=12000 STAGES=train RESERVE=60 bash benchmarks/gpu_occluders.sh
#   $P WORK=/tmp/occl0 OUT=$OUT/s0 PYTHON=python3 SEED=0 STEPS=12000 STAGES="train eval summary" bash benchmarks/gpu_occluders.sh
# On nvidia-h200-x2 each call runs two copies, seed 0 on GPU 0 and seed 1 on GPU 1 (for the no-fisheye ablation
# replace SEED=$g by SEED=0 FISHEYE=$((1 - g))); S is the call's STAGES and RESERVE as above:
#   $P for g in 0 1; do CUDA_VISIBLE_DEVICES=$g WORK=/tmp/occl$g OUT=$OUT/s$g PYTHON=python3 SEED=$g STEPS=12000 \
#     STAGES="data train" RESERVE=60 bash benchmarks/gpu_occluders.sh >$OUT/call1_gpu$g.txt 2>&1 & done; wait
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/occluders}
PY=${PYTHON:-$(command -v python3 || command -v python)}
WORLD=${WORLD:-street}
SEQUENCES=${SEQUENCES:-2}
FRAMES=${FRAMES:-100}
SCALE=${SCALE:-0.52}
DATA_SEED=${DATA_SEED:-0}
TEST_EVERY=${TEST_EVERY:-5}
SEED=${SEED:-0}
FISHEYE=${FISHEYE:-1}
METHOD=${METHOD:-bts-density}
STEPS=${STEPS:-2000}
RESNET=${RESNET:-50}
BATCH_GROUPS=${BATCH_GROUPS:-16}
RAYS=${RAYS:-4096}
SAMPLES=${SAMPLES:-64}
LR=${LR:-1e-4}
NEAR=${NEAR:-3.0}
TARGET_H=${TARGET_H:-192}
TARGET_W=${TARGET_W:-640}
TF32=${TF32:-1}
IMAGENET=${IMAGENET:-}
BEV_IMAGES=${BEV_IMAGES:-8}
AUTOMASK=${AUTOMASK:-0}
HEAD_LR=${HEAD_LR:-}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
EXTRA_DATA_ARGS=${EXTRA_DATA_ARGS:-}
IE_REC_FLOOR=${IE_REC_FLOOR:-}
O_REC_FLOOR=${O_REC_FLOOR:-}
O_ACC_FLOOR=${O_ACC_FLOOR:-}
floors="$IE_REC_FLOOR$O_REC_FLOOR$O_ACC_FLOOR"
if [ -n "$floors" ] && { [ -z "$IE_REC_FLOOR" ] || [ -z "$O_REC_FLOOR" ] || [ -z "$O_ACC_FLOOR" ]; }; then
  echo "gpu_occluders.sh: the one-car check needs all three floors, got IE_REC_FLOOR='$IE_REC_FLOOR'" \
    "O_REC_FLOOR='$O_REC_FLOOR' O_ACC_FLOOR='$O_ACC_FLOOR' (fewer than three pass trivial fields);" \
    "benchmarks/onecar_check.sh sets them" >&2
  exit 1
fi
DEADLINE=${DEADLINE:-510}
RESERVE=${RESERVE:-170}
# shellcheck source=benchmarks/gpu_stages.sh
source benchmarks/gpu_stages.sh
stages_init gpu_occluders.sh "data train eval summary"
export PYTHONUNBUFFERED=1
# On the CPU, one intra-op thread per process: with more threads than free cores, OpenMP's threads spin at every
# barrier waiting for a descheduled sibling (measured on the shared 2-core box at load 3-4: 9.7 s per tiny-preset
# step with torch's default 2 threads, 1.3 s with 1; at load 10-15 that became the 22 s per step of the first try).
if ! nvidia-smi -L >/dev/null 2>&1 || [ "${CUDA_VISIBLE_DEVICES-unset}" = "" ]; then
  export OMP_NUM_THREADS=${THREADS:-${OMP_NUM_THREADS:-1}}
elif [ -n "${THREADS:-}" ]; then
  export OMP_NUM_THREADS=$THREADS
fi
# This checkout's code wins over an installed (possibly older) bts-studio wheel, also for scripts in benchmarks/.
PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-bts-density=bts_studio.method_configs:bts_density,bts-density-tiny=bts_studio.method_configs:bts_density_tiny}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-kitti360-data=bts_studio.dataparser_configs:kitti360_dataparser}
fisheye_flag=True
[ "$FISHEYE" = "0" ] && fisheye_flag=False

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_occluders
rm -f "$WORK/check_failed"
log "WORLD=$WORLD SEQUENCES=$SEQUENCES FRAMES=$FRAMES SCALE=$SCALE DATA_SEED=$DATA_SEED SEED=$SEED FISHEYE=$FISHEYE" \
  "METHOD=$METHOD STEPS=$STEPS RESNET=$RESNET ${BATCH_GROUPS}x$RAYS rays x $SAMPLES samples, ${TARGET_H}x$TARGET_W;" \
  "stages: $STAGES"
# What outlives a call in WORK (chained calls on a warm device share it): the data and its marker, the run, the
# training stages' record (start step, end step, budget s, wall s per line), one training-curve CSV per stage and
# the evaluation's results.
RUN="$WORK/outputs/occluders/$METHOD/run"
RESULTS="$WORK/results"
CURVES="$WORK/curves"
STAGES_TSV="$WORK/occl_train_stages.tsv"
DATA_MARKER="$WORK/occl_data_knobs.txt"
TRAIN_MARKER="$WORK/occl_train_knobs.txt"
mkdir -p "$RESULTS" "$CURVES"
# merge_curves: the stages' CSVs as one $OUT/train_curve.csv (the trainer starts its CSV afresh in every process,
# so each stage writes its own); one header, seconds continued from the previous stage's last row.
merge_curves() {
  local files=("$CURVES"/train_curve_*.csv)
  [ -e "${files[0]}" ] || return 0
  awk -F, -v OFS=, 'FNR == 1 { offset = last; if (NR == 1) print; next }
    { last = $2 + offset; $2 = sprintf("%.3f", last); print }' "${files[@]}" >"$OUT/train_curve.csv.partial"
  mv "$OUT/train_curve.csv.partial" "$OUT/train_curve.csv"
}

# 1. data (kept when WORK already holds it from the same knobs)
data_knobs="world=$WORLD sequences=$SEQUENCES frames=$FRAMES scale=$SCALE data_seed=$DATA_SEED"
generate() {
  local start=$SECONDS
  "$PY" -m bts_studio.cli synth-kitti360 "$WORK/KITTI-360" --sequences "$SEQUENCES" --frames "$FRAMES" \
    --scale "$SCALE" --seed "$DATA_SEED" --world "$WORLD" --overwrite 2>&1 | tail -n 3 | tee -a "$LOG"
  echo $((SECONDS - start)) >"$WORK/occl_data_seconds.txt"
  log "generated $SEQUENCES x $FRAMES frames ($WORLD) in $((SECONDS - start)) s"
}
data_stage "$DATA_MARKER" "$data_knobs" "$WORK/KITTI-360" generate

# 2. training: up to STEPS steps in all (resumed from WORK's run when it has a checkpoint), unless that would miss
# the deadline
if has_stage train; then
  first_step=$(steps_done "$RUN")
  # What makes the run the same run: a resume with other training knobs is refused (STEPS, the deadline and the
  # evaluation knobs may change).
  train_knobs="method=$METHOD seed=$SEED fisheye=$FISHEYE groups=$BATCH_GROUPS rays=$RAYS samples=$SAMPLES"
  train_knobs+=" resnet=$RESNET lr=$LR near=$NEAR target=${TARGET_H}x$TARGET_W test_every=$TEST_EVERY tf32=$TF32"
  train_knobs+=" imagenet=$IMAGENET extra_train=$EXTRA_TRAIN_ARGS extra_data=$EXTRA_DATA_ARGS"
  # Absent when off, so that the markers of earlier runs stay valid.
  if [ "$AUTOMASK" = 1 ]; then train_knobs+=" automask=1"; fi
  if [ -n "$HEAD_LR" ]; then train_knobs+=" head_lr=$HEAD_LR"; fi
  resume=()
  if [ "$first_step" -gt 0 ]; then
    if [ ! -f "$TRAIN_MARKER" ] || knobs_differ "$TRAIN_MARKER" "$train_knobs"; then
      fail "$RUN was trained with '$(cat "$TRAIN_MARKER" 2>/dev/null)', this call asks for '$train_knobs';" \
        "use the same knobs in every call, or another WORK"
    fi
    resume=(--load-dir "$RUN/nerfstudio_models")
    log "train: resuming $METHOD after step $((first_step - 1)) ($first_step of $STEPS steps done)"
  else
    : >"$STAGES_TSV"  # a new run: no earlier training stages or curves
    rm -f "$CURVES"/train_curve_*.csv
    echo "$train_knobs" >"$TRAIN_MARKER"
  fi
  budget=$((DEADLINE - SECONDS - RESERVE))
  [ "$budget" -lt 30 ] && budget=30
  if [ $((STEPS - first_step)) -le 0 ]; then
    log "train: skipped ($first_step steps done, STEPS=$STEPS)"
  else
    rm -f "$RESULTS"/*  # the previous checkpoint's results are stale once it trains on
    weights=()
    if [ -n "$IMAGENET" ]; then weights=(--pipeline.model.imagenet-weights "$IMAGENET"); fi
    # Issue 18's opt-in options: Monodepth2's auto-mask, and the decoder in its own optimizer group with the
    # density MLP's at HEAD_LR (the ResNet stays at LR).
    if [ "$AUTOMASK" = 1 ]; then weights+=(--pipeline.model.automask True); fi
    if [ -n "$HEAD_LR" ]; then
      weights+=(--pipeline.model.decoder-param-group True --optimizers.decoder.optimizer.lr "$HEAD_LR")
    fi
    curve="$CURVES/train_curve_$(printf '%02d' $(($(wc -l <"$STAGES_TSV") + 1))).csv"
    start=$SECONDS
    # --max-num-iterations counts from the resumed step in nerfstudio 1.1.5: the steps left to STEPS.
    # shellcheck disable=SC2086
    "$PY" -c "
import sys, torch
torch.backends.cuda.matmul.allow_tf32 = bool(int(sys.argv[1]))
from nerfstudio.scripts.train import entrypoint
sys.argv = ['ns-train'] + sys.argv[2:]
entrypoint()
" "$TF32" "$METHOD" --data "$WORK/KITTI-360" --output-dir "$WORK/outputs" --experiment-name occluders \
      --timestamp run --vis tensorboard --viewer.quit-on-train-completion True --machine.seed "$SEED" \
      --max-num-iterations $((STEPS - first_step)) --steps-per-save 100000000 --steps-per-eval-batch 100000000 \
      --steps-per-eval-image 100000000 --logging.steps-per-log 50 --pipeline.max-train-seconds "$budget" \
      --pipeline.train-log-csv "$curve" --pipeline.train-log-every 10 \
      --pipeline.datamanager.groups-per-batch "$BATCH_GROUPS" --pipeline.datamanager.rays-per-group "$RAYS" \
      --pipeline.model.resnet-layers "$RESNET" --pipeline.model.num-samples "$SAMPLES" --pipeline.model.near "$NEAR" \
      --optimizers.encoder.optimizer.lr "$LR" --optimizers.density-mlp.optimizer.lr "${HEAD_LR:-$LR}" "${weights[@]}" \
      "${resume[@]}" $EXTRA_TRAIN_ARGS kitti360-data --target-height "$TARGET_H" --target-width "$TARGET_W" \
      --test-every "$TEST_EVERY" --use-fisheye "$fisheye_flag" $EXTRA_DATA_ARGS 2>&1 | quiet | tail -n 40 >>"$LOG"
    train_stage_done "$RUN" "$first_step" "$budget" "$start" "training:"
  fi
  merge_curves
fi

# 3. occupancy (exact + official, with Depth + 4 m) and bird's-eye views of the newest checkpoint
if has_stage eval; then
  [ "$(steps_done "$RUN")" -gt 0 ] || fail "$RUN holds no checkpoint: run the train stage first"
  start=$SECONDS
  # Always the whole test split: the summary's acceptance checks and the one-car floors are defined on it.
  OUT="$OUT" PYTHON="$PY" BEV_IMAGES="$BEV_IMAGES" SPLIT=test MAX_IMAGES='' bash benchmarks/gpu_occupancy.sh "$RUN" \
    2>&1 | quiet | sed -n '1,/^```json/p' | tail -n 40 >>"$LOG"
  occ_s=$((SECONDS - start))
  cp "$OUT/occupancy.json" "$RESULTS/occupancy.json"
  printf '%s %s\n' "$(steps_done "$RUN")" "$occ_s" >"$RESULTS/occupancy_steps_seconds.txt"
  log "eval-occupancy + render-bev of $(steps_done "$RUN") steps took ${occ_s} s"
fi

# 4. summary with paired per-image differences (of what WORK holds: this call's stages and earlier calls' ones)
if has_stage summary; then
merge_curves
if [ -f "$RESULTS/occupancy.json" ]; then
  [ -f "$OUT/occupancy.json" ] || cp "$RESULTS/occupancy.json" "$OUT/occupancy.json"  # an eval of an earlier call
else
  log "summary: no occupancy results of the newest checkpoint in $RESULTS (run eval)"
fi
"$PY" - "$OUT" "$RESULTS" "$STAGES_TSV" "$WORK/occl_data_seconds.txt" "$IE_REC_FLOOR" "$O_REC_FLOOR" "$O_ACC_FLOOR" \
  <<EOF | tee -a "$LOG"
import json
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")  # the script runs from the checkout's root (cd above)
from occluder_curves import BASELINE, METRICS, compared, mean_se, models, paired  # noqa: E402

out, results, stages_tsv, data_seconds = (Path(arg) for arg in sys.argv[1:5])
floors = sys.argv[5:8]  # IE_rec, O_rec, O_acc: all empty (no check) or all set
gen_s = data_seconds.read_text().strip() if data_seconds.is_file() else "?"
stages = [[int(v) for v in line.split("\t")] for line in stages_tsv.read_text().splitlines()] if (
    stages_tsv.is_file()) else []  # fmt: skip
total_steps = stages[-1][1] if stages else 0
budget_s, wall_s = sum(stage[2] for stage in stages), sum(stage[3] for stage in stages)
resumed = sum(1 for stage in stages if stage[0] > 0)
report_path = results / "occupancy.json"
report = json.loads(report_path.read_text()) if report_path.is_file() else {}
evaluated = (results / "occupancy_steps_seconds.txt").read_text().split() if report else ["-", "-"]
names = METRICS

lines = [
    "# bts-density behind occluders (issue #18)",
    "",
    f"World $WORLD, $SEQUENCES x $FRAMES frames, scale $SCALE, data seed $DATA_SEED (generated in {gen_s} s); "
    f"$METHOD, ResNet-$RESNET, ${TARGET_H}x$TARGET_W, ${BATCH_GROUPS} groups x $RAYS rays x $SAMPLES samples, "
    f"lr $LR, near $NEAR m, seed $SEED, fisheyes $fisheye_flag, ImageNet: ${IMAGENET:-none}; {total_steps} of $STEPS "
    f"steps in {len(stages)} training stage(s), resumed {resumed} times: {budget_s} s of training budget in all "
    f"(training wall {wall_s} s, ns-train start-up and checkpoint saves included). "
    + (
        f"Occupancy + BEV of {evaluated[0]} steps took {evaluated[1]} s. Test split: {report['num_images']} images."
        if report
        else "Not evaluated yet."
    ),
    "",
]
if len(stages) > 1:
    lines += ["| training stage | steps at start | steps at end | steps | budget (s) | wall (s) |", "|---|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {a} | {b} | {b - a} | {c} | {d} |" for i, (a, b, c, d) in enumerate(stages)] + [""]
lines += [
    "Per-image means with standard errors (images where a metric is undefined are left out), and the paired "
    "per-image difference model minus Depth + 4 m:",
    "",
    "| variant | metric | $METHOD | depth + 4 m | model - baseline (paired) | model higher on |",
    "|---|---|---|---|---|---|",
]
verdict = {}
for variant, by_model in report.get("per_image", {}).items():
    if BASELINE not in by_model or len(by_model) < 2:  # a report without the model beside Depth + 4 m
        print(f"summary: variant {variant} lacks the model or {BASELINE} ({list(by_model)}); left out", file=sys.stderr)
        continue
    model, base = models(report, variant)  # Depth + 4 m found by name, as in occluder_curves.py
    for name in names:
        means = (mean_se([r.get(name) for r in model])[0], mean_se([r.get(name) for r in base])[0])
        verdict[(variant, name)] = (*means, *paired(model, base, name)[:2])  # model, baseline, difference, its se
        lines.append(f"| {variant} | {name} | {compared(model, base, name)} |")
exact = {name: verdict.get(("exact", name)) for name in names}
if all(exact.values()):
    checks = [
        ("exact IE_acc above Depth + 4 m", exact["ie_acc"][2] > 0),
        ("exact IE_rec above Depth + 4 m", exact["ie_rec"][2] > 0),
        ("exact O_acc within 0.02 of Depth + 4 m", abs(exact["o_acc"][2]) <= 0.02),
    ]
    heading = "Acceptance checks of issue #18 for this run (one seed"
    heading += "; not part of the one-car check below):" if all(floors) else "):"
    lines += ["", heading, ""]
    lines += [f"- {what}: {'PASS' if ok else 'FAIL'}" for what, ok in checks]
if all(floors):
    # Three floors, because trivial fields pass two of them: empty everywhere in the cuboid (IE_rec 1, O_acc high,
    # O_rec 0), occupied at chance in a third of it (the untrained model: IE_rec and O_rec high, O_acc low).
    labels = {"ie_rec": "IE_rec", "o_rec": "O_rec", "o_acc": "O_acc"}
    scored = [(name, exact[name][0] if exact[name] else float("nan"), float(f)) for name, f in zip(labels, floors)]
    ok = all(value >= f for _, value, f in scored)  # NaN (undefined, or nothing evaluated) fails
    # Four decimals, so that a mean just below its floor does not print as equal to it; a failing metric says so.
    cells = ", ".join(
        f"exact {labels[name]} {value:.4f} ({'' if value >= f else 'below the '}floor {f:g})" for name, value, f in scored
    )
    if report:
        lines += ["", f"One-car check at {evaluated[0]} steps: {cells}: {'PASS' if ok else 'FAIL'}"]
    else:
        lines += ["", "One-car check: not evaluated (run the eval stage): FAIL"]
    if not ok:
        (Path("$WORK") / "check_failed").write_text("")
(out / "occluders_summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
fi
log "done; results in $OUT"
if [ -e "$WORK/check_failed" ]; then
  log "one-car check FAILED (exit 3)"
  exit 3
fi
