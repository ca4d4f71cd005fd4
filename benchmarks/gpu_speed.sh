#!/usr/bin/env bash
# bts-density at the speed of the hardware (issue 17): the bench table and the same short training with and
# without the fast paths. MODES is a space-separated list run in order, so two GPUs can share the work:
#
#   OUT=$OUT/a MODES="bench train_fast" CUDA_VISIBLE_DEVICES=0 bash benchmarks/gpu_speed.sh &
#   OUT=$OUT/b MODES="train_twin"       CUDA_VISIBLE_DEVICES=1 bash benchmarks/gpu_speed.sh &
#   wait
#
# bench       bts-studio bench at BTS's shapes (ResNet-50, 192x640, 16 x 4096 rays x 64 samples): one table of
#             variants (twin fp32 reference, twin under torch defaults, projected, triton, default = bts-density's
#             defaults), density-path agreement on random inputs (values and gradients; the GPU twin of the CPU test
#             tests/core/test_fused_density.py) -> speed_bench.md, speed_bench.json. A variant that fails (e.g. the
#             Triton kernel does not compile) is reported in the table's notes; the others still run.
# train_fast  benchmarks/gpu_bts.sh: synthetic KITTI-360 set, ns-train bts-density for MAX_STEPS steps with the
#             fast paths (FAST_PATH, default auto = Triton on CUDA; FAST_ENCODER, default auto = fp32), ns-eval (test abs_rel), then benchmarks/fast_path_agreement.py
#             on the trained checkpoint -> fast_curve.csv, fast_eval.json, fast_summary.md, fast_agreement.json.
# train_twin  the same with the twins: --pipeline.model.fast-path twin --pipeline.model.encoder-precision fp32
#             --pipeline.model.cuda-graphs False --pipeline.model.cuda-graphs-training False
#             --pipeline.datamanager.fused-colour-jitter False -> twin_*. train_fast names the fast settings (graphs
#             and fused jitter True), so the two runs differ only in these flags whatever the defaults become.
# ops         benchmarks/render_ops.py on the GPU at BTS's shapes: aten ops, CUDA kernel launches and synchronising
#             calls per full-frame render, in chunks of 32,768 rays and in one pass, with render and encode times
#             -> render_ops.jsonl (OPS_ARGS: its arguments; ~1 min).
#
# Knobs (environment): PYTHON, MODES ("bench train_fast train_twin"), DEADLINE (470 s for the whole script),
# MAX_STEPS (1200), SEED (42, machine.seed), BENCH_ARGS (extra `bts-studio bench` arguments), BENCH_VARIANTS
# ("twin-fp32 twin projected triton default"), plus gpu_bts.sh's data/model knobs (FRAMES, SCALE,
# RESNET, BATCH_GROUPS, RAYS, SAMPLES, TARGET_H, TARGET_W, TF32, ...), passed through. At most 8 files in $OUT.
# CPU smoke test (tiny; ~10 min on 2 busy cores):
#   OUT=/tmp/speed_smoke MODES="bench train_fast" DEADLINE=1200 MAX_STEPS=6 SCALE=0.06 FRAMES=8 RESNET=18 \
#   BATCH_GROUPS=2 RAYS=128 SAMPLES=16 TARGET_H=64 TARGET_W=160 TEST_EVERY=3 AGREE_IMAGES=1 \
#   BENCH_ARGS="--resnet-layers 18 --height 64 --width 160 --groups 2 --rays-per-group 128 --num-samples 16 \
#   --chunk 4096 --steps 1 --warmup 1 --renders 1 --batch-sizes 1 2 --throughput-repeats 1" bash benchmarks/gpu_speed.sh
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/speed}
PY=${PYTHON:-$(command -v python3 || command -v python)}
MODES=${MODES:-bench train_fast train_twin}
DEADLINE=${DEADLINE:-470}
MAX_STEPS=${MAX_STEPS:-1200}
SEED=${SEED:-42}
BENCH_ARGS=${BENCH_ARGS:-}
OPS_ARGS=${OPS_ARGS:---device cuda --resnet-layers 50 --height 192 --width 640 --chunks 32768 0 --repeats 10}
BENCH_VARIANTS=${BENCH_VARIANTS:-twin-fp32 twin projected triton default}
AGREE_IMAGES=${AGREE_IMAGES:-8}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-bts-density=bts_studio.method_configs:bts_density}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-kitti360-data=bts_studio.dataparser_configs:kitti360_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_speed
log "modes: $MODES; torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>&1 | tail -n 1); triton $("$PY" -c 'import triton; print(triton.__version__)' 2>&1 | tail -n 1)"

run_bench() {
  local start=$SECONDS
  # shellcheck disable=SC2086
  "$PY" -m bts_studio.cli bench --variants $BENCH_VARIANTS --output-json "$OUT/speed_bench.json" $BENCH_ARGS \
    >"$WORK/bench_stdout.txt" 2>"$WORK/bench_stderr.txt"
  local rc=$?
  grep -v -E "Warning|warnings.warn|^ +(fx|cx|c2w|mask)" "$WORK/bench_stderr.txt" | tail -n 40 >>"$LOG"
  cp "$WORK/bench_stdout.txt" "$OUT/speed_bench.md"
  cat "$OUT/speed_bench.md" | tee -a "$LOG"
  log "bench exit $rc after $((SECONDS - start)) s"
}

run_ops() {
  # shellcheck disable=SC2086
  "$PY" benchmarks/render_ops.py $OPS_ARGS >"$OUT/render_ops.jsonl" 2>"$WORK/ops_stderr.txt"
  log "render_ops exit $?"
  grep -E "Error|error" "$WORK/ops_stderr.txt" | tail -n 5 >>"$LOG"
  cat "$OUT/render_ops.jsonl" | tee -a "$LOG"
}

run_train() {  # $1 = fast | twin
  local name=$1 extra="" left
  # Both spelled out, so that the two runs differ only in these flags whatever the defaults become.
  if [ "$name" = "twin" ]; then extra="--pipeline.model.fast-path twin --pipeline.model.encoder-precision fp32 --pipeline.model.cuda-graphs False --pipeline.model.cuda-graphs-training False --pipeline.datamanager.fused-colour-jitter False"; fi
  if [ "$name" = "fast" ]; then extra="--pipeline.model.fast-path ${FAST_PATH:-auto} --pipeline.model.encoder-precision ${FAST_ENCODER:-auto} --pipeline.model.cuda-graphs True --pipeline.model.cuda-graphs-training True --pipeline.datamanager.fused-colour-jitter True"; fi
  left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 120 ]; then
    log "train_$name skipped: only ${left} s left before DEADLINE=$DEADLINE"
    return
  fi
  local sub="$WORK/train_$name"
  mkdir -p "$sub"
  log "train_$name: MAX_STEPS=$MAX_STEPS seed $SEED, ${left} s left; extra args: ${extra:-none}"
  # gpu_bts.sh: data, training (the steps cap decides; the time budget only guards the deadline), ns-eval, baseline.
  OUT="$sub/out" WORK="$sub/work" PYTHON="$PY" MAX_STEPS="$MAX_STEPS" TRAIN_SECONDS=$((left - 100)) \
    DEADLINE="$left" RESERVE="${RESERVE:-90}" VIDEO_FRAMES=0 BENCH=0 CURVE_NAME=train_curve.csv \
    EXTRA_TRAIN_ARGS="--machine.seed $SEED $extra ${EXTRA_TRAIN_ARGS:-}" bash benchmarks/gpu_bts.sh \
    >"$sub/stdout.txt" 2>&1
  log "gpu_bts.sh ($name) exit $?"
  tail -n 25 "$sub/out/train_log.txt" >>"$LOG" 2>/dev/null
  cp "$sub/out/train_curve.csv" "$OUT/${name}_curve.csv" 2>/dev/null || log "no training curve for $name"
  cp "$sub/out/bts_eval.json" "$OUT/${name}_eval.json" 2>/dev/null || log "no ns-eval result for $name"
  cp "$sub/out/bts_summary.md" "$OUT/${name}_summary.md" 2>/dev/null && cat "$OUT/${name}_summary.md" | tee -a "$LOG"
  local config="$sub/work/outputs/synthetic/bts-density/bench/config.yml"
  if [ -f "$config" ] && [ $((DEADLINE - SECONDS)) -gt 20 ]; then
    timeout $((DEADLINE - SECONDS)) "$PY" benchmarks/fast_path_agreement.py --load-config "$config" \
      --output "$OUT/${name}_agreement.json" --images "$AGREE_IMAGES" 2>"$sub/agreement_stderr.txt" | tee -a "$LOG"
    grep -E "Error|error" "$sub/agreement_stderr.txt" | tail -n 5 >>"$LOG"
  fi
}

for mode in $MODES; do
  case "$mode" in
    bench) run_bench ;;
    ops) run_ops ;;
    train_fast) run_train fast ;;
    train_twin) run_train twin ;;
    *) log "unknown mode $mode (bench, ops, train_fast, train_twin)" ;;
  esac
done
log "done in $SECONDS s; files: $(ls "$OUT" | tr '\n' ' ')"
