#!/usr/bin/env bash
# The README's demo: synthetic KITTI-360 -> train bts-density (tiny preset, CPU) -> ns-eval -> ns-render video.
# Usage: scripts/demo.sh [DEMO_DIR]   (make demo runs it inside the project's virtual environment)
set -euo pipefail
demo_dir=${1:-demo}
iterations=${BTS_DEMO_ITERATIONS:-200}
mkdir -p "$demo_dir"
demo_dir=$(cd "$demo_dir" && pwd)
data="$demo_dir/kitti360"
run_dir="$demo_dir/outputs/demo/bts-density-tiny/demo"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ -f "$data/.bts_synthetic_complete" ]; then
  step "Synthetic KITTI-360 already at $data (delete it to regenerate)"
else
  step "Generating the synthetic KITTI-360 sequence into $data"
  bts-studio synth-kitti360 "$data"
  touch "$data/.bts_synthetic_complete"
fi

step "Training bts-density-tiny for $iterations iterations on the CPU"
rm -rf "$run_dir"  # the demo's own previous run, never user data
ns-train bts-density-tiny --data "$data" --output-dir "$demo_dir/outputs" --experiment-name demo \
  --timestamp demo --max-num-iterations "$iterations" --steps-per-save "$iterations" --vis tensorboard \
  --machine.device-type cpu --viewer.quit-on-train-completion True

step "Evaluating (ns-eval: depth against lidar, novel-view PSNR/SSIM)"
ns-eval --load-config "$run_dir/config.yml" --output-path "$demo_dir/eval.json"

step "Rendering a video that drives forward from training frame 0 (ns-render)"
bts-studio camera-path --load-config "$run_dir/config.yml" --source-index 0 --frames 32 --output "$demo_dir/camera_path.json" --overwrite
ns-render camera-path --load-config "$run_dir/config.yml" --camera-path-filename "$demo_dir/camera_path.json" \
  --rendered-output-names rgb depth --output-path "$demo_dir/video.mp4"

step "Done. Outputs:"
echo "  synthetic data     $data"
echo "  training run       $run_dir   (ns-viewer --load-config $run_dir/config.yml)"
echo "  metrics            $demo_dir/eval.json"
echo "  video (rgb|depth)  $demo_dir/video.mp4"
