#!/usr/bin/env bash
# ns-train's step vs the model-only step for bts-density (issue 17: "ns-train steady state vs model-only step,
# keep >= 85 %"), in ONE call on one GPU (~3-4 min on an H200):
#
#   OUT=/some/folder bash benchmarks/gpu_nsstep.sh
#
# 1. bts-studio synth-kitti360 (the default synthetic KITTI-360 set, as gpu_ddp.sh).
# 2. `bts-studio bench --variants $BENCH_VARIANT`: the model-only training step at BTS's shapes (bts-density's
#    defaults under torch's defaults, as ns-train runs them; forward, loss, backward, Adam between two syncs, the batch made outside the timing)
#    -> bench.json, bench.md.
# 3. ns-train bts-density on 1 GPU, BATCH_GROUPS groups x RAYS rays x SAMPLES samples, STEPS steps, loss and
#    wall clock of every step to a CSV, once per RUNS entry: `ahead` (--pipeline.draw-ahead True, the default: step N+1's batch
#    drawn while step N runs) and `plain` (--pipeline.draw-ahead False: nerfstudio's order) -> curve_ahead.csv,
#    curve_plain.csv. Steady state = steps WARMUP..last, from the CSV's wall clock.
# 4. nsstep_summary.md / nsstep_results.json: model-only ms, ns-train ms/step per run, model-only / ns-train
#    (criterion >= 0.85), and whether the two runs' losses are identical step by step (bit-identical on the CPU;
#    on a GPU the grid-sampler backward's atomic adds make even two `plain` runs differ from step 1 on, so there
#    compare with RUNS=plain run twice, OUT apart: docs/benchmarks.md, issue 17, 2026-11-30).
#
# Writes at most 8 files to $OUT: nsstep_summary.md, nsstep_results.json, bench.json, bench.md, curve_ahead.csv,
# curve_plain.csv, train_log.txt.
#
# Knobs (environment): PYTHON, SEQUENCES (1), FRAMES (80), SCALE (0.52), BATCH_GROUPS (16; not GROUPS, which is
# bash's own), RAYS (4096), SAMPLES (64), RESNET (50), TARGET_H (192), TARGET_W (640), STEPS (300), WARMUP (30), SEED (42), RUNS ("ahead plain"),
# BENCH_STEPS (20), BENCH_VARIANT (default; the bench variant matching EXTRA_TRAIN_ARGS, e.g. default-eager
# with --pipeline.model.cuda-graphs-training False), BENCH_ARGS (extra `bts-studio bench` arguments), EXTRA_TRAIN_ARGS, WORK, DEADLINE (470 s: runs
# are skipped or shortened so that everything ends by then), CPU (0; 1 = smoke test on the CPU).
# CPU smoke test (a few minutes on 2 busy cores):
#   OUT=/tmp/nsstep_smoke CPU=1 SCALE=0.06 FRAMES=8 BATCH_GROUPS=2 RAYS=128 SAMPLES=8 RESNET=18 TARGET_H=64 \
#   TARGET_W=160 STEPS=8 WARMUP=2 BENCH_STEPS=2 bash benchmarks/gpu_nsstep.sh
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/nsstep}
PY=${PYTHON:-$(command -v python3 || command -v python)}
SEQUENCES=${SEQUENCES:-1}
FRAMES=${FRAMES:-80}
SCALE=${SCALE:-0.52}
BATCH_GROUPS=${BATCH_GROUPS:-16}
RAYS=${RAYS:-4096}
SAMPLES=${SAMPLES:-64}
RESNET=${RESNET:-50}
TARGET_H=${TARGET_H:-192}
TARGET_W=${TARGET_W:-640}
STEPS=${STEPS:-300}
WARMUP=${WARMUP:-30}
SEED=${SEED:-42}
RUNS=${RUNS:-ahead plain}
BENCH_STEPS=${BENCH_STEPS:-20}
BENCH_ARGS=${BENCH_ARGS:-}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
BENCH_VARIANT=${BENCH_VARIANT:-default}
DEADLINE=${DEADLINE:-470}
CPU=${CPU:-0}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-bts-density=bts_studio.method_configs:bts_density}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-kitti360-data=bts_studio.dataparser_configs:kitti360_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_nsstep
device=cuda
[ "$CPU" = "1" ] && device=cpu

# 1. data
start=$SECONDS
"$PY" -m bts_studio.cli synth-kitti360 "$WORK/KITTI-360" --sequences "$SEQUENCES" --frames "$FRAMES" \
  --scale "$SCALE" --seed 0 --overwrite 2>&1 | tail -n 3 | tee -a "$LOG"
log "generated $SEQUENCES x $FRAMES frames in $((SECONDS - start)) s"

# 2. model-only step (training only: no renders, no density agreement)
start=$SECONDS
# shellcheck disable=SC2086
"$PY" -m bts_studio.cli bench --device "$device" --variants "$BENCH_VARIANT" --resnet-layers "$RESNET" --height "$TARGET_H" \
  --width "$TARGET_W" --groups "$BATCH_GROUPS" --rays-per-group "$RAYS" --num-samples "$SAMPLES" \
  --steps "$BENCH_STEPS" --warmup 3 --renders 1 --batch-sizes 1 --throughput-repeats 1 --no-density-agreement \
  --output-json "$OUT/bench.json" $BENCH_ARGS >"$OUT/bench.md" 2>"$WORK/bench_stderr.txt" \
  || { log "bench FAILED:"; tail -n 20 "$WORK/bench_stderr.txt" >>"$LOG"; }
cat "$OUT/bench.md" >>"$LOG"
log "bench took $((SECONDS - start)) s"

# 3. ns-train runs
train() {  # NAME DRAW_AHEAD
  local name=$1 ahead=$2 left
  left=$((DEADLINE - SECONDS - 20))
  if [ "$left" -lt 40 ]; then
    log "run $name skipped: ${left} s left before DEADLINE"
    return 0
  fi
  start=$SECONDS
  # shellcheck disable=SC2086
  timeout "$left" "$PY" -m nerfstudio.scripts.train bts-density --data "$WORK/KITTI-360" \
    --output-dir "$WORK/outputs" --experiment-name nsstep --timestamp "$name" --vis tensorboard \
    --viewer.quit-on-train-completion True --machine.num-devices 1 --machine.seed "$SEED" \
    --machine.device-type "$device" --max-num-iterations "$STEPS" --steps-per-save 100000000 \
    --steps-per-eval-batch 100000000 --steps-per-eval-image 100000000 --logging.steps-per-log 50 \
    --pipeline.max-train-seconds "$((left - 30 > 30 ? left - 30 : 30))" --pipeline.draw-ahead "$ahead" \
    --pipeline.train-log-csv "$OUT/curve_$name.csv" --pipeline.train-log-every 1 \
    --pipeline.datamanager.groups-per-batch "$BATCH_GROUPS" --pipeline.datamanager.rays-per-group "$RAYS" \
    --pipeline.model.resnet-layers "$RESNET" --pipeline.model.num-samples "$SAMPLES" $EXTRA_TRAIN_ARGS \
    kitti360-data --target-height "$TARGET_H" --target-width "$TARGET_W" 2>&1 | quiet | tail -n 15 >>"$LOG" \
    || log "run $name FAILED (its last output lines are in train_log.txt)"
  log "run $name (draw-ahead $ahead) took $((SECONDS - start)) s wall"
}
for run in $RUNS; do
  case $run in
    ahead) train ahead True ;;
    plain) train plain False ;;
    *) log "unknown run $run (RUNS: ahead plain)" ;;
  esac
done

# 4. results
"$PY" - "$OUT" "$WARMUP" "$STEPS" "$BATCH_GROUPS" "$RAYS" "$SAMPLES" "$RESNET" "$TARGET_H" "$TARGET_W" "$CPU" <<'EOF' | tee -a "$LOG"
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
warmup, steps, groups, rays, samples, resnet, height, width = (int(x) for x in sys.argv[2:10])
cpu = sys.argv[10] == "1"


sys.path.insert(0, "benchmarks")
from train_curve import read_curve, steady_interval  # noqa: E402


def rows(name):
    return read_curve(out / f"curve_{name}.csv")


def steady_ms(data):
    interval = steady_interval(data, warmup)
    return None if interval is None else 1000 * interval[1] / interval[0]


model_ms, variant = None, "?"
bench_path = out / "bench.json"
if bench_path.exists():
    bench = json.loads(bench_path.read_text())
    # the measured variant's (BENCH_VARIANT: default unless the training arguments change the model)
    measured = [v for v in bench.get("variants", []) if "error" not in v]
    if measured:
        model_ms, variant = measured[0].get("train_step_ms"), measured[0].get("variant", "?")
runs = {}
for name in ("ahead", "plain"):
    data = rows(name)
    ms = steady_ms(data)
    runs[name] = {"steps": len(data), "ms_per_step": ms, "steps_per_s": 1000 / ms if ms else None,
                  "model_over_ns_train": model_ms / ms if (ms and model_ms) else None}
a, p = rows("ahead"), rows("plain")
common = min(len(a), len(p))
identical = None  # every logged value (losses, depth) of every common step, the wall clock aside
if common:
    identical = all({k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}
                    for x, y in zip(a[:common], p[:common]))
result = {"config": {"groups": groups, "rays_per_group": rays, "samples": samples, "resnet": resnet,
                     "size": [height, width], "steps": steps, "warmup": warmup, "cpu_smoke": cpu},
          "model_only_train_step_ms": model_ms, "ns_train": runs,
          "losses_identical_ahead_vs_plain": identical, "steps_compared": common}
(out / "nsstep_results.json").write_text(json.dumps(result, indent=2))


def fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


lines = ["# bts-density: ns-train step vs model-only step", "",
         f"ResNet-{resnet}, {height}x{width}, {groups} groups x {rays} rays x {samples} samples, 1 device; "
         f"steady state = steps >= {warmup}.", "",
         f"Model-only step (`bts-studio bench`, variant {variant}, train ms): {fmt(model_ms)} ms.", "",
         "| ns-train run | steps | ms/step | steps/s | model-only / ns-train |", "|---|---|---|---|---|"]
for name, label in (("ahead", "draw-ahead on (the default)"), ("plain", "draw-ahead off")):
    r = runs[name]
    lines.append(f"| {label} | {r['steps']} | {fmt(r['ms_per_step'])} | {fmt(r['steps_per_s'], '.3f')} | "
                 f"{fmt(r['model_over_ns_train'] and 100 * r['model_over_ns_train'])} % |")
lines += ["", f"Criterion: model-only / ns-train >= 85 %. Losses of the two runs identical over {common} steps "
          f"(every logged column): {identical}."]
(out / "nsstep_summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "done in ${SECONDS} s"
