"""How well BTS's official lidar occupancy reference agrees with the exact occupancy of synthetic street scenes.

Model-free. For every test input image (pose index p, camera 0) of the interleaved split of a
``bts-studio synth-kitti360`` folder, on the official query slice (tilted frame, y = 0.375 m, x -4..4 m (80),
z 20..4 m (160): 12,800 points):

* official: the 20-scan reference (``lidar_reference_occupancy``: >= S - 2 votes) and the protocol's
  "current scan sees it free" visibility; also the reference as the protocol scores a model with it
  (``occupied & ~visible``), with visibility = scan only, and = scan or in front of the generator's exact depth
  map (the visibility a model with perfect depth would get);
* exact: the generator's analytic scene at the same world points (``exact_reference``: inside test, and visible =
  in the image and in the camera's line of sight).

Near the end of a sequence the sweep is cut (fewer than 20 scans, as in BTS) and the S - 2 vote threshold drops with
it (3 scans: 1 vote), so the summary is also given for the images with full sweeps only.

Exact categories: occupied; free and visible; free and invisible ("occluded free space", e.g. the sidewalk
shadow behind parked cars, broken down by the label of the first surface on the camera ray).

    python benchmarks/occupancy_reference_agreement.py --data /tmp/occref_data --output-json agreement.json

The lidar vote is ``occupancy_protocol.lidar_reference``, the function ``evaluate_official_frames`` scores models
with; only the occluder-label raycast is local (``exact_visibility`` returns only a boolean).
"""

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from bts_studio.data.kitti360.reader import Kitti360FormatError, Kitti360Paths, list_sequences, read_poses
from bts_studio.data.kitti360.rig import load_rig
from bts_studio.data.kitti360.splits import interleaved_split
from bts_studio.data.synthetic.ground_truth import load_ground_truth_depth, load_ground_truth_scene
from bts_studio.eval.occupancy import (
    CAMERA_TILT_DEG,
    OFFICIAL_NUM_SCANS,
    official_query_points,
    outside_frustum,
    tilted_to_camera,
    visible_before_depth,
)
from bts_studio.eval.occupancy_cli import write_json_atomically
from bts_studio.eval.occupancy_exact import camera_to_world_points, exact_reference
from bts_studio.eval.occupancy_protocol import Kitti360Calibration, lidar_reference, load_lidar_sweep

REFERENCES = ("raw", "scored_scan", "scored_gtdepth")
"""raw: the 18-of-20 vote; scored_*: the vote forced empty where the protocol calls it visible (scan only / scan or
in front of the exact depth map), i.e. what a model is actually compared against."""


def split_test_images(root: Path, test_every: int) -> List[Tuple[str, int, int]]:
    """(sequence, pose index, frame id) of each test input, as the dataparser's interleaved split lists them.

    Synthetic data has every posed frame's left image, so the split runs over all ``poses.txt`` rows.
    """
    frame_ids = {sequence: read_poses(Kitti360Paths(root, sequence).poses)[0] for sequence in list_sequences(root)}
    images = []
    for entry in interleaved_split(frame_ids, "test", test_every):
        pose_index = int(np.flatnonzero(frame_ids[entry.sequence] == entry.image_id)[0])
        images.append((entry.sequence, pose_index, entry.image_id))
    return images


def occluder_labels(
    scene, query_tilted: torch.Tensor, c2w: torch.Tensor, outside_image: torch.Tensor, tilt_deg: float
) -> List[str]:
    """Label of the first surface between the camera centre and each point ("outside_image" / "none" otherwise)."""
    world = camera_to_world_points(tilted_to_camera(query_tilted, tilt_deg).double(), c2w.double())
    centre = c2w[:3, 3].double()
    hits = scene.raycast(centre, (world - centre).float())  # t = 1 at the point itself
    labels = scene.labels
    return [
        "outside_image" if outside else (labels[i] if i >= 0 and t < 1.0 else "none")
        for i, t, outside in zip(hits.primitive_id.tolist(), hits.t.tolist(), outside_image.tolist(), strict=True)
    ]


def analyse_image(
    root: Path,
    sequence: str,
    pose_index: int,
    frame_id: int,
    calibration: Kitti360Calibration,
    scene,
    num_scans: int = OFFICIAL_NUM_SCANS,
    tilt_deg: float = CAMERA_TILT_DEG,
) -> Dict[str, torch.Tensor]:
    """All masks of one image on the official slice (see the module docstring)."""
    query = official_query_points().reshape(-1, 3)
    sweep = load_lidar_sweep(calibration, pose_index, 0, num_scans)
    raw, visible_scan = lidar_reference(sweep, query, tilt_deg)
    c2w = torch.from_numpy(calibration.rectified_camera_to_world(pose_index, 0))
    height, width = calibration.rig.target_size
    K = calibration.rig.K_tensor().float()
    exact_occupied, exact_visible = exact_reference(scene, query, c2w, K, width, height, tilt_deg)
    query_camera = tilted_to_camera(query, tilt_deg)
    # The exact depth map at the generated resolution, with the rig's intrinsics at that size (sky: far away).
    depth = torch.from_numpy(load_ground_truth_depth(root, sequence, 0, frame_id)).float()
    K_depth = torch.from_numpy(
        load_rig(root, tuple(depth.shape), pitch_down_deg=15.0, yaw_deg=0.0, with_fisheyes=False).K
    ).float()
    visible_depth = visible_before_depth(query_camera, K_depth, torch.nan_to_num(depth, posinf=1e6))
    return {
        "query_tilted": query,
        "raw": raw,
        "visible_scan": visible_scan,
        "scored_scan": raw & ~visible_scan,
        "scored_gtdepth": raw & ~(visible_scan | visible_depth),
        "exact_occupied": exact_occupied.cpu(),
        "exact_visible": exact_visible.cpu(),
        "outside_image": outside_frustum(query_camera, K, width, height),
        "c2w": c2w,
        "num_scans": torch.tensor(len(sweep.frame_ids)),
    }


def image_counts(masks: Dict[str, torch.Tensor], scene, tilt_deg: float) -> Dict[str, float]:
    """Numerators and denominators of every ratio for one image (pooling sums them, averaging divides first)."""
    occupied, visible = masks["exact_occupied"], masks["exact_visible"]
    free_visible, occluded_free = ~occupied & visible, ~occupied & ~visible
    counts: Dict[str, float] = {
        "n_points": float(occupied.numel()),
        "n_exact_occupied": float(occupied.sum()),
        "n_exact_free_visible": float(free_visible.sum()),
        "n_exact_occluded_free": float(occluded_free.sum()),
        "n_outside_image": float(masks["outside_image"].sum()),
        "n_scan_visible": float(masks["visible_scan"].sum()),
        "n_scan_visible_in_occluded_free": float((masks["visible_scan"] & occluded_free).sum()),
        "n_scan_visible_in_exact_occupied": float((masks["visible_scan"] & occupied).sum()),
        "num_scans": float(masks["num_scans"]),
    }
    for name in REFERENCES:
        reference = masks[name]
        counts[f"{name}_n_occupied"] = float(reference.sum())
        counts[f"{name}_n_agree"] = float((reference == occupied).sum())
        counts[f"{name}_n_occ_in_exact_occupied"] = float((reference & occupied).sum())
        counts[f"{name}_n_occ_in_occluded_free"] = float((reference & occluded_free).sum())
        counts[f"{name}_n_occ_in_free_visible"] = float((reference & free_visible).sum())
    indices = torch.nonzero(occluded_free).squeeze(-1)
    if indices.numel():
        labels = occluder_labels(
            scene, masks["query_tilted"][indices], masks["c2w"], masks["outside_image"][indices], tilt_deg
        )
        raw = masks["raw"][indices].tolist()
        for label, occupied_by_ref in zip(labels, raw, strict=True):
            counts[f"occluder:{label}:n"] = counts.get(f"occluder:{label}:n", 0.0) + 1
            counts[f"occluder:{label}:raw_n_occ"] = counts.get(f"occluder:{label}:raw_n_occ", 0.0) + occupied_by_ref
    return counts


RATIOS = {
    "agreement_all": ("n_agree", "n_points", "1. agreement, all points"),
    "ref_occupied_given_exact_occluded_free": (
        "n_occ_in_occluded_free",
        "n_exact_occluded_free",
        "2. P(ref occ | exact free, invisible)",
    ),
    "ref_occupied_given_exact_occupied": ("n_occ_in_exact_occupied", "n_exact_occupied", "3. P(ref occ | exact occ)"),
    "ref_occupied_given_exact_free_visible": (
        "n_occ_in_free_visible",
        "n_exact_free_visible",
        "   P(ref occ | exact free, visible)",
    ),
}
"""Per reference: numerator (prefixed by the reference's name), denominator (an exact-category count), label."""


def _mean(values: List[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def summarise(per_image: List[Dict[str, float]]) -> Dict[str, object]:
    """Per reference: each ratio as the mean over images (NaNs skipped) and pooled over all points; mean counts."""
    summary: Dict[str, object] = {"num_images": len(per_image)}
    if not per_image:
        return summary
    for name in REFERENCES:
        block = {}
        for key, (numerator, denominator, _) in RATIOS.items():
            numerator = f"{name}_{numerator}"
            per_ratio = [e.get(numerator, 0.0) / e[denominator] if e[denominator] > 0 else math.nan for e in per_image]
            pooled_den = sum(entry[denominator] for entry in per_image)
            block[key] = {
                "image_mean": _mean(per_ratio),
                "pooled": sum(entry.get(numerator, 0.0) for entry in per_image) / pooled_den if pooled_den else None,
            }
        summary[name] = block
    keys = sorted({key for entry in per_image for key in entry if not key.startswith("occluder:")})
    summary["mean_counts_per_image"] = {key: _mean([entry.get(key, 0.0) for entry in per_image]) for key in keys}
    occluders: Dict[str, Dict[str, float]] = defaultdict(lambda: {"n": 0.0, "raw_n_occ": 0.0})
    for entry in per_image:
        for key, value in entry.items():
            if key.startswith("occluder:"):
                _, label, field = key.split(":")
                occluders[label][field] += value
    summary["occluded_free_by_occluder_pooled"] = {
        label: {"points_per_image": v["n"] / len(per_image), "raw_ref_occupied": v["raw_n_occ"] / v["n"]}
        for label, v in sorted(occluders.items())
    }
    return summary


def print_table(summary: Dict[str, object], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    if not summary.get("num_images"):
        console.print(f"{title}: no images")
        return
    table = Table(title=f"{title}, {summary['num_images']} images: image mean / pooled over points")
    table.add_column("official reference vs exact", no_wrap=True)
    for name in REFERENCES:
        table.add_column(name, justify="right", no_wrap=True)
    for key, (_, _, label) in RATIOS.items():
        cells = []
        for name in REFERENCES:
            value = summary[name][key]  # type: ignore[index]
            cells.append(" / ".join("n/a" if v is None else f"{v:.3f}" for v in (value["image_mean"], value["pooled"])))
        table.add_row(label, *cells)
    console.print(table)
    counts = summary["mean_counts_per_image"]
    console.print(
        "4. mean points per image: "
        + ", ".join(
            f"{key.removeprefix('n_')} {counts[key]:.1f}"  # type: ignore[index]
            for key in (
                "n_exact_occupied",
                "n_exact_free_visible",
                "n_exact_occluded_free",
                "n_outside_image",
                "raw_n_occupied",
                "n_scan_visible",
                "num_scans",
            )
        )
    )
    console.print(
        "   exact occluded free space by occluder (points/image, raw ref occupied): "
        + ", ".join(
            f"{label} {v['points_per_image']:.1f} {v['raw_ref_occupied']:.3f}"
            for label, v in summary["occluded_free_by_occluder_pooled"].items()
        )
    )  # type: ignore[union-attr]


def run(root: Path, test_every: int, num_scans: int, tilt_deg: float, max_images: int | None) -> Dict[str, object]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    images = split_test_images(root, test_every)[:max_images]
    if not images:
        raise SystemExit(f"no test images in {root} with test_every {test_every}")
    calibrations = {sequence: Kitti360Calibration(root, sequence) for sequence in {s for s, _, _ in images}}
    scenes = {sequence: load_ground_truth_scene(root, sequence) for sequence in calibrations}
    per_image = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("reference agreement", total=len(images))
        for sequence, pose_index, frame_id in images:
            masks = analyse_image(
                root, sequence, pose_index, frame_id, calibrations[sequence], scenes[sequence], num_scans, tilt_deg
            )
            counts = image_counts(masks, scenes[sequence], tilt_deg)
            per_image.append({"sequence": sequence, "pose_index": pose_index, "frame_id": frame_id, **counts})
            progress.advance(task)
    numeric = [{k: v for k, v in entry.items() if isinstance(v, float)} for entry in per_image]
    full = [entry for entry in numeric if entry["num_scans"] == num_scans]
    return {
        "data": str(root),
        "test_every": test_every,
        "num_scans": num_scans,
        "tilt_deg": tilt_deg,
        "slice": "official: tilted frame, y = 0.375 m, x -4..4 m (80), z 20..4 m (160)",
        "summary": summarise(numeric),
        "summary_full_sweeps": summarise(full),
        "per_image": per_image,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a bts-studio synth-kitti360 folder")
    parser.add_argument("--test-every", type=int, default=5, help="test stride of the interleaved split")
    parser.add_argument("--num-scans", type=int, default=OFFICIAL_NUM_SCANS)
    parser.add_argument("--tilt-deg", type=float, default=CAMERA_TILT_DEG)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--output-json", type=Path, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-json")
    args = parser.parse_args()
    if args.output_json is not None and args.output_json.exists() and not args.overwrite:
        raise SystemExit(f"{args.output_json} exists; pass --overwrite to replace it")
    start = time.perf_counter()
    try:
        with torch.no_grad():  # not set_grad_enabled: main() also runs inside pytest's process
            report = run(args.data, args.test_every, args.num_scans, args.tilt_deg, args.max_images)
    except (Kitti360FormatError, FileNotFoundError) as error:  # their messages name the file and the fix
        raise SystemExit(f"occupancy_reference_agreement: {error}") from error
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print_table(report["summary"], "all test images")  # type: ignore[arg-type]
    print_table(report["summary_full_sweeps"], f"images with all {args.num_scans} scans")  # type: ignore[arg-type]
    if args.output_json is not None:
        write_json_atomically(args.output_json, report)
        print(f"wrote {args.output_json} ({report['wall_s']} s)")


if __name__ == "__main__":
    main()
