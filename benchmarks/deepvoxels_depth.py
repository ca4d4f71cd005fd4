"""DeepVoxels' learned depth against the exact depth of a ``bts-studio synth-deepvoxels`` scene, plus render timing.

    python benchmarks/deepvoxels_depth.py --load-config RUN/config.yml --views 4 --timing-views 50 \\
        --figure depth.png --output depth.json

Renders ``--views`` test views (evenly spaced on the test spiral) from the stored grid, re-renders the generated
object exactly for the same cameras (``synth_deepvoxels.json`` in the scene root names the object), and reports the
z-depth error of the occlusion network's expected depth on the object's pixels (DeepVoxels has no depth supervision).
The figure shows, per view: render | ground truth | learned depth | exact depth (both depths in one colour range).
Timing: mean milliseconds per rendered frame (``get_outputs_for_camera``, synchronised) and peak GPU memory of it.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from nerfstudio.utils.eval_utils import eval_setup
from PIL import Image

from bts_studio.data.synthetic.deepvoxels_cli import scene_object
from bts_studio.data.synthetic.shapenet_render import render_views
from bts_studio.methods.common.cameras import cameras_to_opencv


def depth_colours(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    """Turbo-coloured uint8 image of a depth map clipped to ``[low, high]`` (NaN/inf: white)."""
    from matplotlib import colormaps

    valid = np.isfinite(depth)
    scaled = np.clip((np.where(valid, depth, high) - low) / max(high - low, 1e-9), 0.0, 1.0)
    rgb = (colormaps["turbo"](scaled)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 255
    return rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--timing-views", type=int, default=50)
    parser.add_argument("--figure", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    _, pipeline, _, _ = eval_setup(args.load_config, test_mode="test")
    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    model.eval()
    scene_root = Path(pipeline.datamanager.config.data)
    record_path = next(
        (
            p / "synth_deepvoxels.json"
            for p in (scene_root, *scene_root.parents)
            if (p / "synth_deepvoxels.json").is_file()
        ),
        None,
    )
    if record_path is None:
        raise SystemExit(f"no synth_deepvoxels.json above {scene_root}: this benchmark needs a generated scene")
    record = json.loads(record_path.read_text())
    instance = scene_object(record["object_class"], record["seed"])

    count = len(dataset)
    chosen = np.linspace(0, count - 1, min(args.views, count)).round().astype(int).tolist()
    K, c2w = cameras_to_opencv(dataset.cameras)
    rows, errors, within_voxel = [], [], []
    for index in chosen:
        camera = dataset.cameras[index : index + 1]
        outputs = model.get_outputs_for_camera(camera)
        height, width = outputs["rgb"].shape[:2]
        fx, fy, cx, cy = (float(K[index, r, c]) for r, c in ((0, 0), (1, 1), (0, 2), (1, 2)))
        exact = render_views(instance, c2w[index : index + 1].double(), fx, fy, cx, cy, height, width)
        learned = outputs["z_depth"][..., 0].cpu().numpy()
        truth, mask = exact.z_depth[0], exact.mask[0]
        error = np.abs(learned - truth)[mask]
        errors.append(error)
        within_voxel.append(float((error < model.voxel_size).mean()))
        low, high = float(truth[mask].min()) - 0.1, float(truth[mask].max()) + 0.1
        rgb = (outputs["rgb"].clamp(0, 1) * 255).round().byte().cpu().numpy()
        target = dataset.get_image_uint8(index)[..., :3].numpy()
        rows.append(
            np.concatenate(
                [
                    rgb,
                    target,
                    depth_colours(learned, low, high),
                    depth_colours(np.where(mask, truth, np.inf), low, high),
                ],
                axis=1,
            )
        )
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.figure)

    device = model.device
    timing = list(range(min(args.timing_views, count)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    model.get_outputs_for_camera(dataset.cameras[0:1])  # warm-up (cuDNN autotuning)
    seconds = []
    for index in timing:
        camera = dataset.cameras[index : index + 1]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.get_outputs_for_camera(camera)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    every = np.concatenate(errors)
    result = {
        "views": chosen,
        "depth_abs_error_mean": float(every.mean()),
        "depth_abs_error_median": float(np.median(every)),
        "depth_within_one_voxel": float(np.mean(within_voxel)),
        "voxel_size": model.voxel_size,
        "ms_per_frame": 1000.0 * float(np.mean(seconds)),
        "timed_views": len(seconds),
        "render_peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "image_side": model.image_side,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
