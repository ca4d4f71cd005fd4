#!/usr/bin/env bash
# bts-density on 1 vs 2 GPUs through nerfstudio's own launcher (ns-train --machine.num-devices 2, DDP over NCCL),
# for docs/benchmarks.md and docs/multi_gpu.md. One call on a machine with 2 GPUs (~6-8 min on 2 H200s):
#
#   OUT=/some/folder bash benchmarks/gpu_ddp.sh
#
# 1. bts-studio synth-kitti360 (the default synthetic KITTI-360 set, as gpu_bts.sh).
# 2. Same effective batch, same seed, STEPS steps each (loss every step to a CSV):
#      (a) 1 GPU,  --pipeline.datamanager.groups-per-batch 2B         -> curve_1gpu_2B.csv
#      (b) 2 GPUs, --pipeline.datamanager.groups-per-batch B per GPU  -> curve_2gpu_B.csv
#    With the same --machine.seed both draw the same frame groups, patches, splits and jitter at every step (the
#    datamanager draws for the global batch and each rank keeps its rows); they differ only by per-GPU batch-norm
#    statistics (SYNC_BN=1 removes that), the model's per-process draws (stratified offsets, input flip) and float
#    summation order. So the curves should agree up to that noise.
# 3. (c) 1 GPU, --pipeline.datamanager.groups-per-batch B, STEPS steps -> curve_1gpu_B.csv.
#    Scaling = steady-state steps/s of (b) / steps/s of (c): the SAME per-GPU batch B on 2 GPUs vs 1 GPU (weak
#    scaling; 2 GPUs then process 2B groups per step). Steady state = steps WARMUP..last of each run, from the
#    CSV's per-step wall clock (rank 0, which waits for the gradient all-reduce every step). Criterion >= 1.8.
#
# Writes at most 8 files to $OUT: ddp_summary.md, ddp_results.json, curve_1gpu_2B.csv, curve_2gpu_B.csv,
# curve_1gpu_B.csv, train_log.txt, ddp_probe.json (PROBE=1), curve_2gpu_2B.csv (LARGE=1).
#
# Knobs (environment): PYTHON, GPUS (CUDA_VISIBLE_DEVICES or 0,1: the two GPUs; the first one does the 1-GPU runs),
# SEQUENCES (1), FRAMES (80), SCALE (0.52), B (8: per-GPU groups of the 2-GPU run; BTS's batch 16 = 2 x 8), STEPS
# (400), WARMUP (20), RUN_SECONDS (120: --pipeline.max-train-seconds of each run), RAYS (4096), SAMPLES (64),
# RESNET (50), TARGET_H (192), TARGET_W (640), SEED (42), SYNC_BN (0), FIND_UNUSED (True), IMAGENET (path),
# EXTRA_TRAIN_ARGS, WORK, LARGE (0; 1 adds run (d) 2 GPUs x 2B, scaled against (a)), RUNS (the runs, in order;
# default "2gpu_B 1gpu_2B 1gpu_B", plus 2gpu_2B with LARGE=1), DEADLINE (470 s: runs are skipped or shortened so that everything ends by then),
# PROBE (1 on GPUs, 0 with CPU=1: benchmarks/ddp_probe.py first, ~30-60 s: the NCCL all-reduce time of 26M floats,
# the per-step small all-reduce, a ResNet-50 step on 1 GPU vs 2 GPUs with DDP -> ddp_probe.json; NCCL's transport
# lines in train_log.txt), CPU (0; 1 = smoke test on the CPU: device-type cpu, the 2-process run through gloo processes that call
# nerfstudio's train_loop, since nerfstudio's launcher asserts CUDA).
# CPU smoke test (about 4 minutes on 2 cores):
#   OUT=/tmp/ddp_bench CPU=1 SCALE=0.06 FRAMES=8 B=1 STEPS=4 WARMUP=1 RAYS=64 SAMPLES=8 RESNET=18 TARGET_H=64 \
#   TARGET_W=160 bash benchmarks/gpu_ddp.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/ddp}
PY=${PYTHON:-$(command -v python3 || command -v python)}
GPUS=${GPUS:-${CUDA_VISIBLE_DEVICES:-0,1}}
SEQUENCES=${SEQUENCES:-1}
FRAMES=${FRAMES:-80}
SCALE=${SCALE:-0.52}
B=${B:-8}
STEPS=${STEPS:-400}
WARMUP=${WARMUP:-20}
RUN_SECONDS=${RUN_SECONDS:-120}
RAYS=${RAYS:-4096}
SAMPLES=${SAMPLES:-64}
RESNET=${RESNET:-50}
TARGET_H=${TARGET_H:-192}
TARGET_W=${TARGET_W:-640}
SEED=${SEED:-42}
SYNC_BN=${SYNC_BN:-0}
FIND_UNUSED=${FIND_UNUSED:-True}
IMAGENET=${IMAGENET:-}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
DEADLINE=${DEADLINE:-470}
LARGE=${LARGE:-0}
RUNS=${RUNS:-2gpu_B 1gpu_2B 1gpu_B$([ "$LARGE" = "1" ] && echo " 2gpu_2B" || true)}
CPU=${CPU:-0}
PROBE=${PROBE:-$([ "$CPU" = "1" ] && echo 0 || echo 1)}
export PYTHONUNBUFFERED=1
# NVLink multicast (NVLS) off in every process: the lent machines do not support it (KINDS.md).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-bts-density=bts_studio.method_configs:bts_density}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-kitti360-data=bts_studio.dataparser_configs:kitti360_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_ddp
FIRST_GPU=${GPUS%%,*}
if [ "$CPU" = "1" ]; then
  device_args=(--machine.device-type cpu)
else
  device_args=(--machine.device-type cuda)
  count=$(CUDA_VISIBLE_DEVICES=$GPUS "$PY" -c "import torch; print(torch.cuda.device_count())")
  log "GPUs $GPUS ($count visible); NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"
  [ "$count" -ge 2 ] || log "fewer than 2 GPUs visible: run (b) will fail"
fi

# 1. data
start=$SECONDS
CUDA_VISIBLE_DEVICES=$FIRST_GPU "$PY" -m bts_studio.cli synth-kitti360 "$WORK/KITTI-360" --sequences "$SEQUENCES" \
  --frames "$FRAMES" --scale "$SCALE" --seed 0 --overwrite 2>&1 | tail -n 3 | tee -a "$LOG"
log "generated $SEQUENCES x $FRAMES frames in $((SECONDS - start)) s"

# CPU mode: nerfstudio's launcher asserts CUDA, so the 2-process run uses gloo processes that do what its
# _distributed_worker does (process group, local group, train_loop). Written here so spawn can import it.
cat >"$WORK/gloo_launch.py" <<'EOF'
import sys

import torch.distributed as dist
import torch.multiprocessing as mp
import tyro
from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
from nerfstudio.scripts.train import _find_free_port, train_loop
from nerfstudio.utils import comms


def worker(rank, world_size, url, config):
    dist.init_process_group("gloo", init_method=url, rank=rank, world_size=world_size)
    comms.LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    train_loop(rank, world_size, config, rank)
    dist.destroy_process_group()


if __name__ == "__main__":
    config = tyro.cli(AnnotatedBaseConfigUnion, args=sys.argv[1:])
    if config.data:  # ns-train's --data alias
        config.pipeline.datamanager.data = config.data
    config.set_timestamp()
    config.save_config()
    world_size = config.machine.num_devices
    mp.spawn(worker, args=(world_size, f"tcp://127.0.0.1:{_find_free_port()}", config), nprocs=world_size)
EOF

# 1b. probe of the collective layer alone (benchmarks/ddp_probe.py): NCCL all-reduce of 26M floats, the per-step
# small all-reduce, ResNet-50 step 1 process vs 2 processes with DDP; NCCL's transport lines go to the log.
if [ "$PROBE" = "1" ]; then
  start=$SECONDS
  probe_args=()
  [ "$CPU" = "1" ] && probe_args=(--cpu --params 100000 --batch 1 --height 32 --width 64 --steps 3)
  CUDA_VISIBLE_DEVICES=$GPUS NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,P2P,SHM,NET timeout 120 "$PY" \
    benchmarks/ddp_probe.py "$OUT/ddp_probe.json" "${probe_args[@]}" >"$WORK/probe.log" 2>&1 \
    || log "ddp_probe FAILED (its last lines are below)"
  { grep -E "via |Channel 00|NCCL version|P2P|SHM" "$WORK/probe.log" | sort | uniq | head -n 20
    tail -n 12 "$WORK/probe.log"; } >>"$LOG"
  log "ddp_probe took $((SECONDS - start)) s"
fi

weights=()
if [ -n "$IMAGENET" ]; then weights=(--pipeline.model.imagenet-weights "$IMAGENET"); fi
# train NAME DEVICES GROUPS_PER_GPU: one ns-train run, loss and wall clock of every step to $OUT/curve_NAME.csv.
train() {
  local name=$1 devices=$2 groups=$3 visible=$FIRST_GPU left budget
  left=$((DEADLINE - SECONDS - 40))
  if [ "$left" -lt 30 ]; then
    log "run $name skipped: ${left} s left before DEADLINE"
    return 0
  fi
  budget=$((left < RUN_SECONDS ? left : RUN_SECONDS))
  [ "$devices" -gt 1 ] && visible=$GPUS
  local runner=("$PY" -m nerfstudio.scripts.train)
  [ "$CPU" = "1" ] && [ "$devices" -gt 1 ] && runner=("$PY" "$WORK/gloo_launch.py")
  start=$SECONDS
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES=$visible "${runner[@]}" bts-density --data "$WORK/KITTI-360" \
    --output-dir "$WORK/outputs" --experiment-name ddp --timestamp "$name" --vis tensorboard \
    --viewer.quit-on-train-completion True --machine.num-devices "$devices" --machine.seed "$SEED" "${device_args[@]}" \
    --max-num-iterations "$STEPS" --steps-per-save 100000000 --steps-per-eval-batch 100000000 \
    --steps-per-eval-image 100000000 --logging.steps-per-log 50 --pipeline.max-train-seconds "$budget" \
    --pipeline.train-log-csv "$OUT/curve_$name.csv" --pipeline.train-log-every 1 \
    --pipeline.sync-batch-norm "$([ "$SYNC_BN" = "1" ] && echo True || echo False)" \
    --pipeline.find-unused-parameters "$FIND_UNUSED" --pipeline.datamanager.groups-per-batch "$groups" \
    --pipeline.datamanager.rays-per-group "$RAYS" --pipeline.model.resnet-layers "$RESNET" \
    --pipeline.model.num-samples "$SAMPLES" "${weights[@]}" $EXTRA_TRAIN_ARGS \
    kitti360-data --target-height "$TARGET_H" --target-width "$TARGET_W" 2>&1 | quiet | tail -n 25 >>"$LOG" \
    || log "run $name FAILED (its last output lines are in train_log.txt)"
  log "run $name ($devices device(s) x $groups groups) took $((SECONDS - start)) s wall (budget ${budget} s)"
}

# 2.-3. the runs; the 2-GPU one first, so that it exists even if the time runs out
for run in $RUNS; do
  case $run in
    2gpu_B) train 2gpu_B 2 "$B" ;;
    1gpu_2B) train 1gpu_2B 1 $((2 * B)) ;;
    1gpu_B) train 1gpu_B 1 "$B" ;;
    2gpu_2B) train 2gpu_2B 2 $((2 * B)) ;;
    *) log "unknown run $run (RUNS: 2gpu_B 1gpu_2B 1gpu_B 2gpu_2B)" ;;
  esac
done

# 4. results
"$PY" - "$OUT" "$B" "$WARMUP" "$STEPS" "$SYNC_BN" "$FIND_UNUSED" "$RESNET" "$TARGET_H" "$TARGET_W" "$RAYS" \
  "$SAMPLES" "$CPU" <<'EOF' | tee -a "$LOG"
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
b, warmup, steps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sync_bn, find_unused, resnet, height, width, rays, samples, cpu = sys.argv[5:13]


sys.path.insert(0, "benchmarks")
from train_curve import read_curve, steady_interval  # noqa: E402


def rows(name):
    return read_curve(out / f"curve_{name}.csv")


def throughput(name, groups_per_step):
    data = rows(name)
    interval = steady_interval(data, warmup)
    if interval is None:
        return None
    d_steps, d_time = interval
    rate = d_steps / d_time
    return {"steps": len(data), "steady_steps": d_steps, "steps_per_s": rate, "groups_per_s": rate * groups_per_step}


runs = {"1gpu_B": (1, b), "2gpu_B": (2, b), "1gpu_2B": (1, 2 * b), "2gpu_2B": (2, 2 * b)}
speed = {name: throughput(name, devices * groups) for name, (devices, groups) in runs.items()}
one, two = rows("1gpu_2B"), rows("2gpu_B")
common = min(len(one), len(two))
curve = None
if common:
    a = [float(r["loss"]) for r in one[:common]]
    c = [float(r["loss"]) for r in two[:common]]
    k = max(1, common // 10)
    curve = {
        "steps_compared": common,
        "mean_abs_loss_difference": sum(abs(x - y) for x, y in zip(a, c)) / common,
        "mean_loss_1gpu_2B": sum(a) / common,
        "mean_loss_2gpu_B": sum(c) / common,
        "first_k_mean": [sum(a[:k]) / k, sum(c[:k]) / k],
        "last_k_mean": [sum(a[-k:]) / k, sum(c[-k:]) / k],
        "k": k,
    }
scaling = None
if speed["1gpu_B"] and speed["2gpu_B"]:
    scaling = speed["2gpu_B"]["groups_per_s"] / speed["1gpu_B"]["groups_per_s"]
scaling_2b = None
if speed["1gpu_2B"] and speed["2gpu_2B"]:
    scaling_2b = speed["2gpu_2B"]["groups_per_s"] / speed["1gpu_2B"]["groups_per_s"]
result = {
    "config": {"per_gpu_groups_B": b, "steps": steps, "warmup": warmup, "sync_batch_norm": sync_bn,
               "find_unused_parameters": find_unused, "resnet": resnet, "size": [int(height), int(width)],
               "rays_per_group": int(rays), "samples": int(samples), "cpu_smoke": cpu == "1"},
    "throughput": speed,
    "scaling_2gpu_over_1gpu_same_per_gpu_batch": scaling,
    "scaling_2gpu_over_1gpu_per_gpu_batch_2B": scaling_2b,
    "loss_curves_1gpu_2B_vs_2gpu_B": curve,
}
(out / "ddp_results.json").write_text(json.dumps(result, indent=2))


def fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


lines = [
    "# bts-density: 1 vs 2 GPUs (nerfstudio launcher, DDP)",
    "",
    f"ResNet-{resnet}, {height}x{width}, {rays} rays/group, {samples} samples, sync BN {sync_bn}, "
    f"find_unused_parameters {find_unused}; steady state = steps >= {warmup}.",
    "",
    "| run | GPUs x groups/GPU | steps | steps/s | groups/s |",
    "|---|---|---|---|---|",
]
for name, (devices, groups) in runs.items():
    s = speed[name]
    lines.append(f"| {name} | {devices} x {groups} | {s['steps'] if s else 'n/a'} | "
                 f"{fmt(s and s['steps_per_s'])} | {fmt(s and s['groups_per_s'], '.1f')} |")
lines += ["", f"Scaling at the same per-GPU batch B={b} (groups/s of 2 GPUs / 1 GPU, i.e. 2 x the ratio of steps/s): "
          f"{fmt(scaling, '.2f')} (criterion >= 1.8)."]
if scaling_2b is not None:
    lines += ["", f"Scaling at per-GPU batch 2B={2 * b}: {scaling_2b:.2f}."]
if curve:
    lines += ["", f"Loss, same effective batch {2 * b} (1 GPU x {2 * b} vs 2 GPUs x {b}, same seed), "
              f"{curve['steps_compared']} steps: mean |difference| {curve['mean_abs_loss_difference']:.4f} "
              f"(mean loss {curve['mean_loss_1gpu_2B']:.4f} vs {curve['mean_loss_2gpu_B']:.4f}); first/last "
              f"{curve['k']} steps: {curve['first_k_mean'][0]:.4f} -> {curve['last_k_mean'][0]:.4f} (1 GPU), "
              f"{curve['first_k_mean'][1]:.4f} -> {curve['last_k_mean'][1]:.4f} (2 GPUs)."]
probe_path = out / "ddp_probe.json"
if probe_path.exists():
    p = json.loads(probe_path.read_text())
    lines += ["", f"Probe (benchmarks/ddp_probe.py): all-reduce of {p['params'] / 1e6:.1f}M fp32 {p['allreduce_ms']:.2f} ms; "
              f"small all-reduce + read-back {p['small_allreduce_ms']:.3f} ms; ResNet-50 step [{p['batch']}, 3, "
              f"{p['height']}, {p['width']}] {p['resnet50_1proc_ms']:.1f} ms on 1 GPU, "
              f"{p['resnet50_2proc_ddp_ms']:.1f} ms on 2 with DDP (+{p['resnet50_ddp_overhead_ms']:.1f} ms)."]
(out / "ddp_summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "done in ${SECONDS} s"
