#!/usr/bin/env bash
# Occupancy metrics and bird's-eye views of a trained bts-density run, for docs/benchmarks.md.
#
#   OUT=/some/folder bash benchmarks/gpu_occupancy.sh RUN_DIR        (or BTS_RUN_DIR=RUN_DIR)
#
# RUN_DIR holds the run's config.yml, or is any folder above it (the newest config.yml below it is used), e.g. the
# run benchmarks/gpu_bts.sh trained in the same GPU call. Scores the model and the "Depth + 4 m" baseline with the
# official lidar protocol and, when the data is synthetic (it has bts_gt/), with the exact variant too; renders
# bird's-eye views with a video. Writes at most four files to $OUT:
#   occupancy.md       table of O_acc / IE_acc / IE_rec (+ precision/recall, timings), and per variant how many
#                      images the model beats the baseline on IE_acc (paired, image by image)
#   occupancy.json     the full eval-occupancy report (means and per-image values)
#   bev_montage.png    four bird's-eye frames stacked (input | depth | model | depth+4m | ground truth)
#   bev.mp4            the bird's-eye video over the rendered frames
# Knobs: PYTHON (interpreter with bts-studio installed), SPLIT (test), MAX_IMAGES (all), BEV_IMAGES (40).
set -euo pipefail

RUN=${1:-${BTS_RUN_DIR:-}}
if [ -z "$RUN" ] || [ ! -e "$RUN" ]; then
  echo "usage: OUT=folder bash benchmarks/gpu_occupancy.sh RUN_DIR   (a bts-density run folder with config.yml)" >&2
  exit 2
fi
OUT=${OUT:-benchmarks/out/occupancy}
PY=${PYTHON:-python}
SPLIT=${SPLIT:-test}
BEV_IMAGES=${BEV_IMAGES:-40}
mkdir -p "$OUT"
CONFIG=$(find "$RUN" -name config.yml -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
if [ -z "$CONFIG" ]; then
  echo "gpu_occupancy: no config.yml under $RUN" >&2
  exit 2
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# nerfstudio hands datamanager.data (when set) to the dataparser.
DATA=$("$PY" -c "import sys, yaml; d = yaml.load(open(sys.argv[1]), Loader=yaml.Loader).pipeline.datamanager; \
print(getattr(d, 'data', None) or d.dataparser.data)" "$CONFIG" 2>/dev/null | tail -1)
VARIANT=official
[ -d "$DATA/bts_gt" ] && VARIANT=both
MAX_ARGS=()
[ -n "${MAX_IMAGES:-}" ] && MAX_ARGS=(--max-images "$MAX_IMAGES")
echo "gpu_occupancy: config $CONFIG, data $DATA, variant $VARIANT, split $SPLIT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"

start=$SECONDS
"$PY" -m bts_studio.cli eval-occupancy --load-config "$CONFIG" --split "$SPLIT" --variant "$VARIANT" \
  --baseline depth+4m --output-path "$WORK/occupancy.json" "${MAX_ARGS[@]}"
eval_s=$((SECONDS - start))

start=$SECONDS
"$PY" -m bts_studio.cli render-bev --load-config "$CONFIG" --split "$SPLIT" --output-dir "$WORK/bev" \
  --max-images "$BEV_IMAGES" --panels image depth baseline gt --video
bev_s=$((SECONDS - start))

"$PY" - "$WORK" "$OUT" "$CONFIG" "$eval_s" "$bev_s" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

work, out, config, eval_s, bev_s = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
report = json.loads((work / "occupancy.json").read_text())
names = ["o_acc", "ie_acc", "ie_rec", "o_prec", "o_rec", "ie_prec"]
lines = [
    f"# Occupancy of `{config}`",
    "",
    f"{report['split']} split, {report['num_images']} images; eval-occupancy {eval_s:.1f} s, "
    f"render-bev {bev_s:.1f} s (wall, including model loading).",
    "",
    "| variant | model | " + " | ".join(names) + " | n_frames |",
    "|---|---|" + "---:|" * (len(names) + 1),
]
for variant, by_model in report["results"].items():
    for model, metrics in by_model.items():
        cells = ["n/a" if metrics.get(n) is None else f"{metrics[n]:.3f}" for n in names]
        lines.append(f"| {variant} | {model} | " + " | ".join(cells) + f" | {int(metrics['n_frames'])} |")
for model, metrics in report.get("depth", {}).items():
    if model != "protocol" and "abs_rel" in metrics:
        cells = ", ".join(f"{n} {metrics[n]:.3f}" for n in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"))
        lines += ["", f"Depth ({model}, {metrics['n_frames']} images, {report['depth']['protocol']}): {cells}"]
for variant, by_model in report.get("per_image", {}).items():
    names_ = list(by_model)
    if len(names_) < 2:
        continue
    model, base = names_[0], names_[1]
    pairs = [(a["ie_acc"], b["ie_acc"]) for a, b in zip(by_model[model], by_model[base])
             if a.get("ie_acc") is not None and b.get("ie_acc") is not None]
    if pairs:
        diff = np.array([a - b for a, b in pairs])
        stderr = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        lines += ["", f"IE_acc, {variant}, {model} minus {base}, image by image: mean {diff.mean():+.3f} "
                  f"(standard error {stderr:.3f}), {model} higher on {(diff > 0).sum()} of {len(diff)} images."]
lines += ["", "Protocols:", ""] + [f"- {k}: {v}" for k, v in report["protocols"].items()]
lines += ["", "```json", json.dumps(report["results"], indent=1), "```", ""]
(out / "occupancy.md").write_text("\n".join(lines))
(out / "occupancy.json").write_text(json.dumps(report, indent=1))
print("\n".join(lines))

frames = sorted((work / "bev").glob("bev_*.png"))
if frames:
    picks = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, min(4, len(frames)))]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in dict.fromkeys(picks)]
    width = max(i.shape[1] for i in images)
    images = [np.pad(i, ((0, 6), (0, width - i.shape[1]), (0, 0)), constant_values=255) for i in images]
    Image.fromarray(np.concatenate(images, axis=0)).save(out / "bev_montage.png")
    print(f"montage of {len(images)} frames: {out / 'bev_montage.png'}")
video = work / "bev" / "bev.mp4"
if video.is_file():
    (out / "bev.mp4").write_bytes(video.read_bytes())
    print(f"video: {out / 'bev.mp4'}")
else:
    print("no video was written (no encoder); see the PNG montage")
EOF
