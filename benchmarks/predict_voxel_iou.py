"""IoU of ``bts-studio predict --export voxels`` against a synthetic scene's exact occupancy, model vs Depth + 4 m.

For each test image of a bts-density run trained on ``bts-studio synth-kitti360`` data:

1. ``bts-studio predict`` runs on the image file with the sequence's ``perspective.txt`` (the true intrinsics) and
   ``--export voxels``; its ``voxels.npz`` is read back;
2. the "Depth + 4 m" baseline, built on the same prediction's depth map (``depth_plus_band_field``), is exported
   through the same ``sample_voxels`` / ``write_voxels_npz`` functions on the same grid and read back;
3. the voxel centres go to the world with the image's camera-to-world pose and the generator's analytic scene says
   which are occupied (``load_ground_truth_scene(...).occupied(points)``);
4. IoU = |predicted & true| / |predicted | true| over the voxels inside the image (the npz's ``inside`` mask), summed
   over all images (micro average), with precision and recall; once over the whole frustum (the solid ground below
   the road is most of it) and once over the voxels more than a voxel above the road ("above_ground": cars,
   buildings, trees, poles).

Usage::

    python benchmarks/predict_voxel_iou.py --load-config RUN/config.yml --output-json iou.json [--max-images 8]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def counts(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([(predicted & truth).sum(), (predicted | truth).sum(), predicted.sum(), truth.sum()], np.int64)


def summary(total: np.ndarray) -> dict:
    intersection, union, predicted, truth = (int(v) for v in total)
    return {
        "iou": intersection / max(union, 1),
        "precision": intersection / max(predicted, 1),
        "recall": intersection / max(truth, 1),
        "predicted_voxels": predicted,
        "true_voxels": truth,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--output-json", type=Path, required=True)
    parser.add_argument("--max-images", type=int, default=8)
    parser.add_argument("--voxel-size", type=float, default=0.25)
    parser.add_argument("--max-depth", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=None, help="folder for predict's outputs (default: temporary)")
    args = parser.parse_args(argv)

    from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene
    from bts_studio.eval import predict_cli, predict_exports
    from bts_studio.eval.density_field import depth_plus_band_field
    from bts_studio.eval.kitti360_run import data_root, eval_images, load_pipeline, split_dataset
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration
    from bts_studio.eval.predict_model import load_model

    _, pipeline = load_pipeline(args.load_config, "predict_voxel_iou")
    root = data_root(pipeline, "test")
    dataset = split_dataset(pipeline, "test")
    images = eval_images(pipeline, "test")
    step = max(1, len(images) // args.max_images)
    images = images[::step][: args.max_images]
    del pipeline  # predict loads its own model from the checkpoint, as a user would
    work = args.work or Path(tempfile.mkdtemp(prefix="predict_iou_"))
    loaded = load_model(load_config=args.load_config)
    scenes, calibrations = {}, {}
    totals = {f"{m}/{r}": np.zeros(4, np.int64) for m in ("model", "depth+4m") for r in ("frustum", "above_ground")}
    per_image = []
    for image in images:
        path = Path(dataset.image_filenames[image.index])
        name = f"{image.sequence}_{image.frame_id:010d}_{image.camera_id}"
        config = predict_cli.PredictConfig(
            inputs=(path,),
            output_dir=work / name,
            load_config=args.load_config,
            calibration=root / "calibration" / "perspective.txt",
            calibration_camera=image.camera_id,
            export=("voxels",),
            voxel_size=args.voxel_size,
            export_max_depth=args.max_depth,
            bev=False,
            flythrough_frames=0,
            overwrite=True,
        )
        # predict_one is what `bts-studio predict` runs per image; the model is loaded once here
        from bts_studio.eval.predict_inputs import read_image

        decoded = read_image(path)
        out = work / name / path.stem
        predict_cli.predict_one(config, loaded, decoded.pixels, decoded.exif, out)
        with np.load(out / "voxels.npz") as data:
            model_occupied, inside = data["occupied"], data["inside"]
            xs, ys, zs, K = data["xs"], data["ys"], data["zs"], torch.from_numpy(data["K"]).float()
            size = tuple(int(v) for v in data["image_size_hw"])
        # the baseline on the same prediction, exported by the same functions on the same grid
        fitted_image = torch.from_numpy(decoded.pixels).permute(2, 0, 1).float() / 255
        prediction = predict_cli.predict_depth(loaded.model, fitted_image, K)
        grid = predict_exports.FrustumGrid(
            torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(zs), args.voxel_size
        )
        baseline = predict_exports.sample_voxels(depth_plus_band_field(prediction.field), grid)
        predict_exports.write_voxels_npz(out / "baseline_voxels.npz", baseline, K, size, overwrite=True)
        with np.load(out / "baseline_voxels.npz") as data:
            baseline_occupied = data["occupied"]
        # ground truth at the voxel centres
        if image.sequence not in scenes:
            scenes[image.sequence] = load_ground_truth_scene(root, image.sequence)
            calibrations[image.sequence] = Kitti360Calibration(root, image.sequence)
        c2w = torch.from_numpy(
            calibrations[image.sequence].rectified_camera_to_world(image.pose_index, image.camera_id)
        )
        points = grid.points().reshape(-1, 3).double()
        world = points @ c2w[:3, :3].T + c2w[:3, 3]
        scene = scenes[image.sequence]
        truth = scene.occupied(world).reshape(grid.shape).cpu().numpy().astype(bool) & inside
        # the solid ground fills most of the frustum below the road; "above_ground" scores the street's objects
        ground_z = max(float(p.center[2]) for p in scene.primitives if p.kind == "halfspace")
        above = (world[:, 2] > ground_z + args.voxel_size).reshape(grid.shape).cpu().numpy() & inside
        entry = {"image": name}
        for label, occupied in (("model", model_occupied), ("depth+4m", baseline_occupied)):
            for region, mask in (("frustum", inside), ("above_ground", above)):
                c = counts(occupied & mask, truth & mask)
                totals[f"{label}/{region}"] += c
                entry[f"{label}/{region}"] = summary(c)
        per_image.append(entry)
        ious = ", ".join(f"{key} {value['iou']:.3f}" for key, value in entry.items() if key != "image")
        print(f"{name}: IoU {ious}", flush=True)
    report = {
        "load_config": str(args.load_config),
        "checkpoint_step": loaded.step,
        "num_images": len(per_image),
        "voxel_size_m": args.voxel_size,
        "z_range_m": [loaded.model.config.near, args.max_depth],
        "device": str(loaded.model.device),
        "results": {label: summary(total) for label, total in totals.items()},
        "per_image": per_image,
    }
    args.output_json.parent.mkdir(parents=True, exist_ok=True)
    args.output_json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"], indent=2))
    return report


if __name__ == "__main__":
    sys.exit(main() is None)
