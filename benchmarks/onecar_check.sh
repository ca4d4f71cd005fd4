#!/usr/bin/env bash
# Issue #18's exact-ground-truth regression check: the tiny preset (bts-density-tiny, ResNet-18 from scratch) on
# the one-car world must find the car and leave free space in the scored cuboid. It runs benchmarks/gpu_occluders.sh
# with the check's knobs fixed below. The summary ends in "One-car check: exact IE_rec ... O_rec ...: PASS|FAIL";
# exit 3 on FAIL.
#
#   OUT=/some/folder PYTHON=python3 SEED=0 bash benchmarks/onecar_check.sh
#
# Both floors apply to per-image means over the 10 test images:
# - exact IE_rec >= IE_REC_FLOOR (0.35);
# - exact O_rec >= O_REC_FLOOR (0.25). In the one-car world the cuboid's occupied points are the car's, so this
#   says "the car was found". Without it a field that is empty everywhere would pass: its IE_rec is 1.
#
# Where the floors come from (docs/benchmarks.md, "The one-car check on the GPU", 2026-12-01): 65k steps on one
# H200, seeds 0 and 1. Each floor is the lower seed's mean minus twice its per-image standard error:
# - IE_rec: 0.545 - 2 x 0.099 = 0.347, rounded to 0.35;
# - O_rec: 0.499 - 2 x 0.112 = 0.275, rounded down to 0.25.
# The check fails on the measured runs that did not find the car: 600 CPU steps (O_rec 0.000) and 22k steps of
# seed 0 (O_rec 0.207).
#
# Cost: 65k steps take ~1,260 s on one H200 (19.4 ms/step) plus ~70 s for data, occupancy and the bird's-eye views.
# It cannot run in the test suite: the CPU trains ~0.75 s/step, so 65k steps are ~13 h. The device tool allows
# 600 s per call, so there it takes three chained calls on one warm machine (STAGES and WORK, as in
# gpu_occluders.sh):
#   WORK=/tmp/onecar STAGES="data train" DEADLINE=540 RESERVE=60 bash benchmarks/onecar_check.sh
#   WORK=/tmp/onecar STAGES=train DEADLINE=540 RESERVE=60 bash benchmarks/onecar_check.sh
#   WORK=/tmp/onecar STAGES="train eval summary" DEADLINE=540 RESERVE=110 bash benchmarks/onecar_check.sh
#
# Environment: STEPS (65000, the run's total), SEED, OUT, WORK, STAGES, DEADLINE, RESERVE, PYTHON and THREADS pass
# through to gpu_occluders.sh. The world, the preset and its knobs are set here and override the environment,
# because the floors hold only for them.
set -euo pipefail
cd "$(dirname "$0")/.."
export WORLD=one-car SEQUENCES=1 FRAMES=32 SCALE=0.25 DATA_SEED=0 METHOD=bts-density-tiny RESNET=18 \
  BATCH_GROUPS=2 RAYS=512 SAMPLES=32 LR=1e-4 NEAR=3.0 TARGET_H=96 TARGET_W=320 TEST_EVERY=3 BEV_IMAGES=10 \
  FISHEYE=1 IMAGENET= AUTOMASK=0 HEAD_LR= EXTRA_TRAIN_ARGS= EXTRA_DATA_ARGS=
export STEPS=${STEPS:-65000} IE_REC_FLOOR=${IE_REC_FLOOR:-0.35} O_REC_FLOOR=${O_REC_FLOOR:-0.25}
# Off the device tool there is no 600 s cap: the deadline defaults to two hours.
export DEADLINE=${DEADLINE:-7200}
exec bash benchmarks/gpu_occluders.sh
