"""Is the "behind the occluder" training signal in the data? Exact measurement on a synthetic KITTI-360 folder.

Model-free and CPU-only. For every training frame group of a ``bts-studio synth-kitti360`` folder (the frames the
``kitti360-data`` dataparser groups: input camera c at pose row t, same camera t+1, stereo partner t / t+1,
same-side fisheye pinhole t+10 / t+11, other fisheye t+10 / t+11; rows clamped at the sequence end), take the
exact variant's query points (``ExactGrid``: tilted frame, x -4..4 m, 0..1 m below the camera, z 3..20 m) and
keep the **target** points: exactly empty, inside the input image, and hidden from the input camera by a parked
car (the first surface on the camera ray is labelled ``car``). A target point carries a BTS training signal from
another frame j when j "sees it free": it lies in j's image (the virtual pinholes of the fisheyes share the
perspective intrinsics at 192 x 640, as in BTS) and j's line of sight reaches it before any surface (exact ray
cast). Reported per group and pooled:

* ``any``: share of target points seen free by at least one other frame of the group;
* ``by_column``: the same per group column (1 = same camera t+1, 2/3 = stereo partner t/t+1, 4/5 = same-side
  fisheye t+10/t+11, 6/7 = other fisheye);
* ``loss_frame``: share seen free by a *loss* frame of BTS's kitti360-mono split (rays are cast only from loss
  frames), averaged over the two equally likely splits {0,3,4,7} / {1,2,5,6};
* ``without_fisheyes``: ``any`` using columns 1-3 only (the no-fisheye ablation's data);
* ``*_sampled``: the same, counting only points at least 3 m (BTS's near distance) from the frame's camera: rays
  are sampled from 3 m on, so a nearer point gets no signal from that frame (a side fisheye is ~2 m from the
  parked cars next to it);
* ``pulled_occupied_*``: target points 3-5 m from a (loss / fisheye) frame's camera on a line of sight that hits a
  surface nearer than 3 m: that pixel's true surface is never sampled, so the loss pulls density onto the first
  samples, behind the surface: a push to fill the space behind the occluder.

    bts-studio synth-kitti360 /tmp/occl/d80 --frames 80 --scale 0.06   # the scene and poses do not depend on scale
    python benchmarks/occluder_signal.py --data /tmp/occl/d80 --output-json signal.json

Only poses, calibration and ``bts_gt/<seq>/scene.json`` are read, so a tiny ``--scale`` gives the same numbers as
the default 0.52 (the scene and poses are drawn before, and independently of, the images).
"""

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from bts_studio.data.kitti360.reader import Kitti360Paths, list_sequences, read_poses
from bts_studio.data.kitti360.rig import frame_group_layout, load_rig
from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene
from bts_studio.eval.occupancy import CAMERA_TILT_DEG, outside_frustum, tilted_to_camera
from bts_studio.eval.occupancy_exact import ExactGrid, camera_to_world_points, exact_visibility

TARGET_SIZE = (192, 640)
"""(height, width) of the parsed images (BTS's KITTI-360 resolution); every frame, fisheye pinholes included."""
FISHEYE_OFFSET = 10
"""kitti360-data's default ``fisheye_offset`` (BTS: 10)."""
NEAR = 3.0
"""BTS's near distance along unit rays (KITTI-360: 3 m)."""
SPLITS = ((0, 3, 4, 7), (1, 2, 5, 6))
"""BTS's kitti360-mono loss-frame sets; each is drawn with probability 1/2."""


def seen_free(
    scene, points_world: torch.Tensor, c2w: np.ndarray, K: torch.Tensor, height: int, width: int, near: float = 0.0
) -> torch.Tensor:
    """``[N]`` bool: the points lie in the camera's image, at least ``near`` metres from its centre, and its line of
    sight reaches them (exact)."""
    c2w_t = torch.from_numpy(c2w)
    camera = (points_world - c2w_t[:3, 3]) @ c2w_t[:3, :3]
    in_image = ~outside_frustum(camera.float(), K, width, height) & (camera.norm(dim=-1) >= near)
    visible = torch.zeros_like(in_image)
    if in_image.any():
        visible[in_image] = exact_visibility(scene, points_world[in_image], c2w_t[:3, 3]).cpu()
    return visible


def analyse_group(
    scene, poses: np.ndarray, rig, side: int, t: int, query_tilted: torch.Tensor, near: float = NEAR
) -> Dict[str, float]:
    """Counts of target points and of those seen free per column for one group."""
    height, width = TARGET_SIZE
    K = rig.K_tensor().float()
    layout = frame_group_layout(side, t, len(poses) - 1, FISHEYE_OFFSET)
    c2w = [poses[row] @ rig.camera_to_pose[camera] for camera, row in layout]
    query_camera = tilted_to_camera(query_tilted, CAMERA_TILT_DEG)
    points_world = camera_to_world_points(query_camera.double(), torch.from_numpy(c2w[0]))
    occupied = scene.occupied(points_world).cpu()
    in_image = ~outside_frustum(query_camera, K, width, height)
    centre = torch.from_numpy(c2w[0][:3, 3])
    offsets = points_world - centre
    hits = scene.raycast(centre, offsets.float())  # t = 1 at the point
    hidden = hits.t.cpu() < 1.0
    labels = scene.labels
    car = torch.tensor([i >= 0 and labels[i] == "car" for i in hits.primitive_id.cpu().tolist()])
    occluded_free = ~occupied & in_image & hidden
    target = occluded_free & car
    counts = {"n_target": float(target.sum()), "n_occluded_free": float(occluded_free.sum())}
    if not target.any():
        return counts
    targets = points_world[target]
    seen = torch.stack(
        [torch.zeros(len(targets), dtype=torch.bool)]
        + [seen_free(scene, targets, c2w[j], K, height, width) for j in range(1, 8)]
    )  # [8, T]; column 0 (the input) never sees its own occluded points
    for j in range(1, 8):
        counts[f"col{j}"] = float(seen[j].sum())
    counts["any"] = float(seen.any(0).sum())
    counts["without_fisheyes"] = float(seen[1:4].any(0).sum())
    counts["fisheyes_only"] = float(seen[4:8].any(0).sum())
    counts["loss_frame"] = float(np.mean([float(seen[list(split)].any(0).sum()) for split in SPLITS]))
    # BTS samples rays from NEAR metres on: a point closer to a frame's camera is never sampled by its rays.
    sampled = torch.stack(
        [seen[0]] + [seen[j] & seen_free(scene, targets, c2w[j], K, height, width, near) for j in range(1, 8)]
    )
    counts["any_sampled"] = float(sampled.any(0).sum())
    counts["loss_frame_sampled"] = float(np.mean([float(sampled[list(split)].any(0).sum()) for split in SPLITS]))
    counts["without_fisheyes_sampled"] = float(sampled[1:4].any(0).sum())
    # The opposite push: frame j's ray to the point is blocked by a surface nearer than NEAR (never sampled), so the
    # best a field can do for that pixel is put density at the ray's first samples, i.e. behind that surface.
    pulled = torch.stack(
        [seen[0]] + [near_blocked(scene, targets, c2w[j], K, height, width, near) for j in range(1, 8)]
    )
    counts["pulled_occupied_loss_frame"] = float(np.mean([float(pulled[list(split)].any(0).sum()) for split in SPLITS]))
    counts["pulled_occupied_fisheyes"] = float(pulled[4:8].any(0).sum())
    return counts


def near_blocked(
    scene,
    points_world: torch.Tensor,
    c2w: np.ndarray,
    K: torch.Tensor,
    height: int,
    width: int,
    near: float = NEAR,
    band: float = 2.0,
) -> torch.Tensor:
    """``[N]`` bool: in the camera's image, NEAR..NEAR+band metres from its centre, and the line of sight hits a
    surface nearer than NEAR (which the ray's samples never reach)."""
    c2w_t = torch.from_numpy(c2w)
    offsets = points_world - c2w_t[:3, 3]
    camera = offsets @ c2w_t[:3, :3]
    distance = camera.norm(dim=-1)
    candidate = ~outside_frustum(camera.float(), K, width, height) & (distance >= near) & (distance <= near + band)
    blocked = torch.zeros_like(candidate)
    if candidate.any():
        unit = offsets[candidate] / distance[candidate, None]
        hits = scene.raycast(c2w_t[:3, 3], unit.float())
        blocked[candidate] = hits.t.cpu().double() < near
    return blocked


def measure(data: Path, sides: Tuple[int, ...], every: int, grid: ExactGrid, near: float = NEAR) -> Dict:
    """Pooled and per-group-mean shares over all sequences of ``data``."""
    rig = load_rig(data, TARGET_SIZE, pitch_down_deg=15.0, yaw_deg=0.0, with_fisheyes=False)
    query = grid.points().reshape(-1, 3)
    groups: List[Dict[str, float]] = []
    for sequence in list_sequences(data):
        scene = load_ground_truth_scene(data, sequence)
        _, poses = read_poses(Kitti360Paths(data, sequence).poses)
        for t in range(0, len(poses), every):
            for side in sides:
                counts = analyse_group(scene, poses, rig, side, t, query, near)
                counts.update(sequence=sequence, t=t, side=side)
                groups.append(counts)
    keys = ["any", "loss_frame", "without_fisheyes", "fisheyes_only", "any_sampled", "loss_frame_sampled"]
    keys += ["without_fisheyes_sampled", "pulled_occupied_loss_frame", "pulled_occupied_fisheyes"]
    keys += [f"col{j}" for j in range(1, 8)]
    with_targets = [g for g in groups if g["n_target"] > 0]
    total = sum(g["n_target"] for g in groups)
    pooled = {k: sum(g.get(k, 0.0) for g in groups) / max(total, 1.0) for k in keys}
    mean = {k: float(np.mean([g[k] / g["n_target"] for g in with_targets])) if with_targets else 0.0 for k in keys}
    return {
        "data": str(data),
        "near": near,
        "groups": len(groups),
        "groups_with_targets": len(with_targets),
        "target_points_per_group": total / max(len(groups), 1),
        "occluded_free_points_per_group": sum(g["n_occluded_free"] for g in groups) / max(len(groups), 1),
        "query_points_per_group": int(query.shape[0]),
        "pooled": pooled,
        "group_mean": mean,
        "per_group": groups,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a bts-studio synth-kitti360 folder")
    parser.add_argument("--sides", default="lr", help="input cameras of the groups: l (image_00), r (image_01)")
    parser.add_argument("--every", type=int, default=1, help="use every N-th pose row as an input frame")
    parser.add_argument("--points-per-metre", type=float, default=5.0, help="query density along x and z")
    parser.add_argument("--near", type=float, default=NEAR, help="ray sampling start, metres (BTS: 3)")
    parser.add_argument("--output-json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    sides = tuple(0 if s == "l" else 1 for s in args.sides)
    start = time.perf_counter()
    grid = ExactGrid(points_per_metre_xz=args.points_per_metre)
    report = measure(args.data, sides, args.every, grid, args.near)
    report["seconds"] = time.perf_counter() - start
    summary = {k: v for k, v in report.items() if k != "per_group"}
    print(json.dumps(summary, indent=1))
    if args.output_json is not None:
        args.output_json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
