#!/usr/bin/env bash
# SRN on a generated "cars" class, end to end, for docs/benchmarks.md. One GPU call (~9 min on one H100):
#
#   OUT=/some/folder bash benchmarks/gpu_srn.sh
#
# 1. bts-studio synth-shapenet: a cars class in SRN's layout (128 px; 50 random views per training car,
#    251 spiral views per test car).
# 2. ns-train srn for TRAIN_SECONDS (300) of training (--pipeline.max-train-seconds), HELDOUT views per training
#    car withheld.
# 3. ns-eval: few-shot (1-shot view 64, 2-shot views 64+104) PSNR/SSIM on the test cars, inputs excluded,
#    plus PSNR/SSIM on the held-out views of the training cars.
# 4. benchmarks/srn_baselines.py: the "mean training image" and "nearest training view" baselines on exactly
#    the same views with the same metric code, and the forward time per full image.
# 5. bts-studio srn-interpolate: a latent-interpolation video (SRN Fig. 5).
#
# Writes at most 7 files to $OUT: srn_summary.md (the table), srn_eval.json, srn_baselines.json, config.yml,
# train_log.txt, srn_fewshot_montage.png, srn_interpolation.mp4. Results are written as soon as they exist, so
# a run cut short still returns what it finished.
#
# Knobs (environment): PYTHON, INSTANCES (50), TEST_INSTANCES (8), RESOLUTION (128), TRAIN_VIEWS (50),
# TEST_VIEWS (251), HELDOUT (5), TRAIN_SECONDS (300), MAX_STEPS (1000000), INSTANCES_PER_BATCH (32),
# RAYS_PER_INSTANCE (2048), LR (1e-4), LATENT_LR (1e-3), FEW_SHOT_STEPS (400), FEW_SHOT_LR (1e-3),
# FEW_SHOT_VIEWS ("64"; the dataparser's check), INPUT_VIEWS ("64 104"), TF32 (1: TF32 matmuls on CUDA),
# TIMING_IMAGES (50), EXTRA_TRAIN_ARGS (appended to ns-train's method arguments), WORK (scratch folder).
# Learning rates: SRN trains 175k steps at 5e-5; with a 5-minute budget, a CPU proxy (64-wide SRN, 16 cars at
# 32 px, ~1000 steps) scored 1-shot 16.6 / 2-shot 17.6 / held-out 19.5 dB with SRN's 5e-5 and 18.3 / 19.6 / 20.1 dB
# with 2e-4 (networks) and 1e-3 (codes); the defaults take the codes' 1e-3 and a middle 1e-4 for the networks.
# LR=5e-5 LATENT_LR=5e-5 gives SRN's own settings.
# CPU smoke test with tiny settings:
#   OUT=/tmp/srn_bench INSTANCES=4 TEST_INSTANCES=1 RESOLUTION=32 TRAIN_VIEWS=8 TEST_VIEWS=8 HELDOUT=1 \
#   TRAIN_SECONDS=20 FEW_SHOT_STEPS=5 FEW_SHOT_VIEWS=0 INPUT_VIEWS="0 3" TIMING_IMAGES=3 \
#   EXTRA_TRAIN_ARGS="--pipeline.model.latent-dim 16 --pipeline.model.phi-hidden 32 --pipeline.model.hyper-hidden 32" \
#   bash benchmarks/gpu_srn.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-benchmarks/out/srn}
PY=${PYTHON:-python}
INSTANCES=${INSTANCES:-50}
TEST_INSTANCES=${TEST_INSTANCES:-8}
RESOLUTION=${RESOLUTION:-128}
TRAIN_VIEWS=${TRAIN_VIEWS:-50}
TEST_VIEWS=${TEST_VIEWS:-251}
HELDOUT=${HELDOUT:-5}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
MAX_STEPS=${MAX_STEPS:-1000000}
INSTANCES_PER_BATCH=${INSTANCES_PER_BATCH:-32}
RAYS_PER_INSTANCE=${RAYS_PER_INSTANCE:-2048}
LR=${LR:-1e-4}
LATENT_LR=${LATENT_LR:-1e-3}
FEW_SHOT_STEPS=${FEW_SHOT_STEPS:-400}
FEW_SHOT_LR=${FEW_SHOT_LR:-1e-3}
FEW_SHOT_VIEWS=${FEW_SHOT_VIEWS:-64}
INPUT_VIEWS=${INPUT_VIEWS:-"64 104"}
TF32=${TF32:-1}
TIMING_IMAGES=${TIMING_IMAGES:-50}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}
export PYTHONUNBUFFERED=1
# This checkout's bts_studio first, also for `python benchmarks/...` (whose sys.path starts in benchmarks/).
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
# Register the plugin even where the installed bts-studio metadata predates the srn entry points.
export NERFSTUDIO_METHOD_CONFIGS=${NERFSTUDIO_METHOD_CONFIGS:-srn=bts_studio.method_configs:srn}
export NERFSTUDIO_DATAPARSER_CONFIGS=${NERFSTUDIO_DATAPARSER_CONFIGS:-shapenet-srn-data=bts_studio.dataparser_configs:shapenet_srn_dataparser}

# shellcheck source=benchmarks/gpu_prologue.sh
source benchmarks/gpu_prologue.sh
gpu_prologue gpu_srn

# 1. data
start=$SECONDS
"$PY" -m bts_studio.cli synth-shapenet "$WORK/data" --classes cars --instances "$INSTANCES" --val-instances 1 \
  --test-instances "$TEST_INSTANCES" --format srn --resolution "$RESOLUTION" --train-views "$TRAIN_VIEWS" \
  --test-views "$TEST_VIEWS" --overwrite 2>&1 | tail -n 3 | tee -a "$LOG"
gen_s=$((SECONDS - start))
log "generated $INSTANCES training + $TEST_INSTANCES test cars in ${gen_s} s"

# 2. training (TF32 through a tiny wrapper: nerfstudio has no flag for it)
start=$SECONDS
# shellcheck disable=SC2086
"$PY" -c "
import sys, torch
torch.backends.cuda.matmul.allow_tf32 = bool(int(sys.argv[1]))
from nerfstudio.scripts.train import entrypoint
sys.argv = ['ns-train'] + sys.argv[2:]
entrypoint()
" "$TF32" srn --data "$WORK/data/srn_cars" --output-dir "$WORK/outputs" --experiment-name cars --timestamp bench \
  --vis tensorboard --viewer.quit-on-train-completion True --max-num-iterations "$MAX_STEPS" \
  --steps-per-save 100000000 --steps-per-eval-batch 1000 --steps-per-eval-image 5000 --logging.steps-per-log 250 \
  --pipeline.max-train-seconds "$TRAIN_SECONDS" \
  --pipeline.datamanager.instances-per-batch "$INSTANCES_PER_BATCH" \
  --pipeline.datamanager.rays-per-instance "$RAYS_PER_INSTANCE" \
  --pipeline.datamanager.heldout-views-per-instance "$HELDOUT" \
  --pipeline.few-shot.num-steps "$FEW_SHOT_STEPS" --pipeline.few-shot.learning-rate "$FEW_SHOT_LR" \
  --pipeline.few-shot.input-views $INPUT_VIEWS \
  --optimizers.networks.optimizer.lr "$LR" --optimizers.latent-codes.optimizer.lr "$LATENT_LR" \
  $EXTRA_TRAIN_ARGS \
  shapenet-srn-data --few-shot-views $FEW_SHOT_VIEWS 2>&1 | grep -v -E "UserWarning|^ +(fx|cx|c2w|mask|self\._apply)" \
  | tr '\r' '\n' | grep -v '^\s*$' | tail -n 60 >>"$LOG"
train_wall_s=$((SECONDS - start))
RUN="$WORK/outputs/cars/srn/bench"
CONFIG="$RUN/config.yml"
cp "$CONFIG" "$OUT/config.yml"
CKPT=$(ls "$RUN"/nerfstudio_models/step-*.ckpt | tail -n 1)
log "training finished in ${train_wall_s} s wall; checkpoint $(basename "$CKPT")"

# 3. ns-eval (few-shot protocol + held-out views of training cars)
start=$SECONDS
"$PY" -m nerfstudio.scripts.eval --load-config "$CONFIG" --output-path "$OUT/srn_eval.json" \
  --render-output-path "$WORK/renders" 2>&1 | grep -v -E "Warning|^ +(fx|cx|c2w|mask|self\._apply)" | tail -n 5 | tee -a "$LOG"
eval_s=$((SECONDS - start))
log "ns-eval took ${eval_s} s"

# 4. baselines + forward time
start=$SECONDS
"$PY" benchmarks/srn_baselines.py --load-config "$CONFIG" --output "$OUT/srn_baselines.json" \
  --timing-images "$TIMING_IMAGES" >/dev/null 2>>"$WORK/baselines.err" || { tail -n 20 "$WORK/baselines.err" | tee -a "$LOG"; exit 1; }
baselines_s=$((SECONDS - start))
log "baselines and timing took ${baselines_s} s"

# 6. summary table (before the optional video, so a slow encoder cannot cost it)
"$PY" - "$OUT" "$WORK" "$CKPT" "$gen_s" "$train_wall_s" "$eval_s" "$TRAIN_SECONDS" "$LR" "$LATENT_LR" "$TF32" <<'EOF'
import json
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out, work, ckpt = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
gen_s, train_s, eval_s, budget, lr, latent_lr, tf32 = sys.argv[4:11]
evaluation = json.loads((out / "srn_eval.json").read_text())["results"]
reference = json.loads((out / "srn_baselines.json").read_text())
baselines, timing = reference["baselines"], reference.get("timing", {})
steps = int(re.search(r"step-(\d+)", ckpt.name).group(1)) + 1  # step-N.ckpt holds steps 0..N
rows = [("srn", evaluation)] + [(name.replace("_", " "), values) for name, values in baselines.items()]
settings = [key[: -len("psnr")] for key in evaluation if key.endswith("psnr") and key != "psnr"]


def cell(values, key):
    psnr, ssim = values.get(f"{key}psnr"), values.get(f"{key}ssim")
    return "n/a" if psnr is None else f"{psnr:.2f} / {ssim:.3f}"


lines = [
    "# SRN on the generated cars class",
    "",
    f"Training: {steps} steps in a {budget} s budget (Adam lr {lr}, latent lr {latent_lr}, TF32 {tf32}); "
    f"data generation {gen_s} s, training wall {train_s} s, ns-eval {eval_s} s.",
    "",
    "PSNR / SSIM (scikit-image), mean over scored images; inputs excluded from the few-shot scores.",
    "",
    "| method | " + " | ".join(s.rstrip("_") for s in settings) + " |",
    "|---|" + "---|" * len(settings),
]
lines += ["| " + name + " | " + " | ".join(cell(values, s) for s in settings) + " |" for name, values in rows]
counts = ", ".join(f"{s.rstrip('_')}: {evaluation.get(s + 'num_images')} images" for s in settings)
lines += ["", f"Scored: {counts}."]
if timing:
    lines += [
        "",
        f"Forward time per {timing['image_height']}x{timing['image_width']} image (get_outputs_for_camera, "
        f"{timing['timed_images']} images, {timing['device']}): {1000 * timing['forward_seconds_per_image']:.1f} ms",
    ]
fit = {k: v for k, v in evaluation.items() if "fit_loss" in k}
lines += ["", "Few-shot fitting loss (first -> last step): " + json.dumps(fit), ""]
(out / "srn_summary.md").write_text("\n".join(lines))
print("\n".join(lines))

renders = sorted((work / "renders").glob("1shot_*.png"))[:6] + sorted((work / "renders").glob("2shot_*.png"))[:6]
if renders:
    images = [np.asarray(Image.open(path).convert("RGB")) for path in renders]
    Image.fromarray(np.concatenate(images, axis=0)).save(out / "srn_fewshot_montage.png")
EOF

# 5. latent interpolation video (optional: needs PyAV)
"$PY" -m bts_studio.cli srn-interpolate --load-config "$CONFIG" --instance-a 0 --instance-b 1 --frames 72 \
  --output "$OUT/srn_interpolation.mp4" --overwrite 2>&1 | tail -n 1 | tee -a "$LOG" \
  || log "no interpolation video (srn-interpolate failed; see above)"
log "done; results in $OUT"
