"""``bts-studio eval-occupancy``: O_acc, IE_acc and IE_rec of a trained bts-density run, as BTS measures them.

Variants (see docs/benchmarks.md for numbers):

* ``official``: BTS's lidar protocol (``models/bts/evaluator_lidar.py``), quirks included
  (``bts_studio.eval.occupancy_protocol``); works on real KITTI-360 and on ``bts-studio synth-kitti360`` output;
* ``exact``: synthetic data only; the generator's analytic scene gives exact occupancy over the paper's full cuboid
  and exact visibility (``bts_studio.eval.occupancy_exact``).

``--baseline depth+4m`` also scores the paper's "Depth + 4 m" baseline built on the model's own depth map, through
the same code. Writes one JSON with the means over images (NaNs skipped per metric, as BTS) and per-image values.

Example::

    bts-studio eval-occupancy --load-config outputs/kitti360/bts-density/RUN/config.yml \\
        --output-path occ.json --variant both --baseline depth+4m
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import torch
import tyro

from bts_studio.eval.density_field import depth_plus_band_field
from bts_studio.eval.occupancy import CAMERA_TILT_DEG, OFFICIAL_NUM_SCANS, mean_metrics

TOOL = "bts-studio eval-occupancy"
REPORTED = ("o_acc", "ie_acc", "ie_rec")


@dataclass
class EvalOccupancyConfig:
    """Occupancy metrics of a bts-density run trained on kitti360-data."""

    load_config: Path
    """The run's config.yml (outputs/<experiment>/bts-density/<timestamp>/config.yml)."""
    output_path: Path = Path("occupancy.json")
    """Where the JSON report is written."""
    split: Literal["test", "train"] = "test"
    """Dataset split whose input images are evaluated (test: BTS's test_files.txt with the official split)."""
    variant: Literal["official", "exact", "both"] = "official"
    """official: accumulated-lidar protocol of BTS. exact: analytic ground truth of synthetic data (needs the
    generator's bts_gt/ folder). both: the two."""
    baseline: Optional[Literal["depth+4m"]] = None
    """Also score a baseline through the same code: depth+4m = occupied within 4 m behind the predicted depth."""
    baseline_band: float = 4.0
    """Depth band of the depth+4m baseline, metres."""
    num_scans: int = OFFICIAL_NUM_SCANS
    """Lidar scans accumulated per image in the official variant (BTS: 20)."""
    tilt_deg: float = CAMERA_TILT_DEG
    """Downward camera pitch the query grids are corrected for (BTS: 5 degrees for KITTI-360)."""
    max_images: Optional[int] = None
    """Evaluate only the first N images of the split (quick checks)."""
    depth_metrics: bool = True
    """Also report KITTI depth metrics of the model's depth map against the dataparser's lidar depth (BTS's
    KITTI-360 protocol: no crop, 80 m cap, no median scaling unless asked)."""
    depth_crop: Literal["none", "garg", "eigen"] = "none"
    """Crop of the depth metrics."""
    median_scaling: bool = False
    """Scale each predicted depth map by median(gt) / median(pred) before the depth metrics."""
    per_image: bool = True
    """Write every image's metrics into the report, not only the means."""
    overwrite: bool = False
    """Replace an existing output file."""


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _clean(metrics: Dict[str, Any]) -> Dict[str, Any]:
    return {name: _finite_or_none(value) for name, value in metrics.items()}


def write_json_atomically(path: Path, payload: Dict[str, Any]) -> None:
    """Write JSON under a temporary name in the target folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(payload, indent=2, allow_nan=False))
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def ground_truth_scenes(root: Path, sequences: List[str]) -> Dict[str, Any]:
    """The generator's analytic scene of every sequence, or a clear error for data without one."""
    from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene

    scenes = {}
    for sequence in sequences:
        try:
            scenes[sequence] = load_ground_truth_scene(root, sequence)
        except FileNotFoundError as error:
            raise SystemExit(
                f"{TOOL}: the exact variant needs the analytic scene that `bts-studio synth-kitti360` writes to "
                f"{root / 'bts_gt' / sequence}; it is missing ({error}). Real KITTI-360 has none: use "
                "--variant official."
            ) from error
    return scenes


def evaluate(config: EvalOccupancyConfig) -> Dict[str, Any]:
    """Run the evaluation and return the report (see the module docstring)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bts_studio.core.depth_metrics import average_metrics, depth_metrics
    from bts_studio.eval.kitti360_run import data_root, eval_images, lidar_depth, load_pipeline, model_field
    from bts_studio.eval.occupancy_exact import ExactGrid, evaluate_exact_frames
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration, evaluate_official_frames, load_lidar_sweep

    trainer_config, pipeline = load_pipeline(config.load_config, TOOL)
    images = eval_images(pipeline, config.split, config.max_images)
    root = data_root(pipeline, config.split)
    sequences = sorted({image.sequence for image in images})
    variants = ["official", "exact"] if config.variant == "both" else [config.variant]
    scenes = ground_truth_scenes(root, sequences) if "exact" in variants else {}
    calibrations = {sequence: Kitti360Calibration(root, sequence) for sequence in sequences}
    method = str(getattr(trainer_config, "method_name", "model"))
    models = [method] + ([config.baseline] if config.baseline else [])
    per_image: Dict[str, Dict[str, List[Dict[str, Any]]]] = {v: {m: [] for m in models} for v in variants}
    depth_per_image: List[Optional[Dict[str, float]]] = []

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(f"occupancy ({', '.join(variants)})", total=len(images))
        for image in images:
            field_, _ = model_field(pipeline, config.split, image)
            fields = {method: field_}
            if config.baseline:
                fields[config.baseline] = depth_plus_band_field(field_, config.baseline_band)
            calibration = calibrations[image.sequence]
            if config.depth_metrics:
                gt_depth = lidar_depth(pipeline, config.split, image)
                if gt_depth is not None:
                    depth_per_image.append(
                        depth_metrics(
                            field_.depth.cpu(), gt_depth, crop=config.depth_crop, median_scaling=config.median_scaling
                        )
                    )
            where = {"sequence": image.sequence, "frame_id": image.frame_id}
            if "official" in variants:
                sweep = load_lidar_sweep(calibration, image.pose_index, image.camera_id, config.num_scans)
                frames = evaluate_official_frames(fields, sweep, tilt_deg=config.tilt_deg)
                for name, frame in frames.items():
                    per_image["official"][name].append({**where, "num_scans": len(sweep.frame_ids), **frame.metrics})
            if "exact" in variants:
                c2w = torch.from_numpy(calibration.rectified_camera_to_world(image.pose_index, image.camera_id))
                frames = evaluate_exact_frames(fields, scenes[image.sequence], c2w, tilt_deg=config.tilt_deg)
                for name, frame in frames.items():
                    per_image["exact"][name].append({**where, **frame.metrics})
            progress.advance(task)

    grid = ExactGrid()
    report: Dict[str, Any] = {
        "config": str(config.load_config),
        "split": config.split,
        "num_images": len(images),
        "protocols": {
            "official": f"BTS lidar protocol: slice y=0.375 m, x -4..4 m (80), z 4..20 m (160), {config.num_scans} "
            "scans, >= S-2 votes, visible = current scan free or in front of predicted depth, density > 0.5",
            "exact": f"analytic scene: x {grid.x_range}, y {grid.y_range} below camera, z {grid.z_range} m, "
            f"{grid.points_per_metre_xz}/m in x and z, {grid.points_per_metre_y}/m in y; visible = in image and "
            "line of sight (raycast); density > 0.5",
        },
        "tilt_deg": config.tilt_deg,
        "results": {
            variant: {name: _clean(mean_metrics(entries)) for name, entries in by_model.items()}
            for variant, by_model in per_image.items()
        },
    }
    if config.depth_metrics:
        valid = [metrics for metrics in depth_per_image if metrics is not None]
        report["depth"] = {
            method: {**average_metrics(valid), "n_frames": len(valid)},
            "protocol": f"single-scan lidar z-depth at the parsed resolution, crop {config.depth_crop}, cap 80 m, "
            f"median scaling {'on' if config.median_scaling else 'off'}",
        }
    if config.per_image:
        report["per_image"] = {
            variant: {name: [_clean(entry) for entry in entries] for name, entries in by_model.items()}
            for variant, by_model in per_image.items()
        }
    return report


def print_summary(report: Dict[str, Any]) -> None:
    """A rich table of the headline metrics."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"occupancy, {report['split']} split, {report['num_images']} images")
    table.add_column("variant")
    table.add_column("model")
    for name in REPORTED:
        table.add_column(name, justify="right")
    for variant, by_model in report["results"].items():
        for name, metrics in by_model.items():
            values = [metrics.get(metric) for metric in REPORTED]
            table.add_row(variant, name, *("n/a" if v is None else f"{v:.3f}" for v in values))
    console = Console()
    console.print(table)
    for name, metrics in report.get("depth", {}).items():
        if name != "protocol" and "abs_rel" in metrics:
            console.print(
                f"depth ({name}, {metrics['n_frames']} images with lidar): abs_rel {metrics['abs_rel']:.3f}, "
                f"rmse {metrics['rmse']:.3f}, a1 {metrics['a1']:.3f}"
            )


def main(argv: Optional[List[str]] = None, prog: str = TOOL) -> None:
    """Parse arguments with tyro and run the evaluation."""
    config = tyro.cli(EvalOccupancyConfig, args=argv, prog=prog)
    if config.output_path.exists() and not config.overwrite:
        raise SystemExit(f"{prog}: {config.output_path} exists; pass --overwrite to replace it")
    if config.num_scans < 1:
        raise SystemExit(f"{prog}: --num-scans must be at least 1, got {config.num_scans}")
    report = evaluate(config)
    write_json_atomically(config.output_path, report)
    print_summary(report)
    print(f"wrote {config.output_path}")


if __name__ == "__main__":
    main()
