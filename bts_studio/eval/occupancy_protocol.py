"""The official BTS occupancy protocol on KITTI-360: reference occupancy from 20 accumulated lidar scans.

One evaluated image = one ``data_poses/<seq>/poses.txt`` row (its pose index). Its lidar sweep is the velodyne scans
of that row and the next 19 rows (fewer at the end of a sequence, as in BTS), each placed in the evaluated camera's
frame through the KITTI-360 calibration chain::

    rectified camera c -> world:  poses[i] @ calib_cam_to_pose[image_0c] @ inv(R_rect_0c)
    velodyne -> world:            poses[j] @ calib_cam_to_pose[image_00] @ inv(calib_cam_to_velo)

The maths (tilted frame, polar profiles, 18-of-20 vote, visibility, metrics) is ``bts_studio.eval.occupancy``.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from bts_studio.data.kitti360.reader import Kitti360Paths, read_poses, read_velodyne
from bts_studio.data.kitti360.rig import load_rig
from bts_studio.eval.density_field import FrameField
from bts_studio.eval.occupancy import (
    CAMERA_TILT_DEG,
    OCCUPIED_DENSITY_THRESHOLD,
    OFFICIAL_NUM_SCANS,
    lidar_reference_occupancy,
    occupancy_metrics,
    official_query_points,
    tilt_rotation,
    tilted_to_camera,
    visible_before_depth,
)


@dataclass
class OccupancyFrame:
    """One evaluated image: query points, the three masks, and the metrics computed from them."""

    query_tilted: Float[Tensor, "N 3"]
    pred_occupied: Bool[Tensor, " N"]
    gt_occupied: Bool[Tensor, " N"]
    """Reference occupancy, already forced empty where visible."""
    visible: Bool[Tensor, " N"]
    metrics: Dict[str, float] = field(default_factory=dict)


def score_frame(
    field_: FrameField, query_tilted: Tensor, gt_occupied: Tensor, visible: Tensor, tilt_deg: float
) -> OccupancyFrame:
    """Query the model at the points, threshold at 0.5 and compute the metrics (shared by both variants)."""
    query_camera = tilted_to_camera(query_tilted, tilt_deg)
    pred_occupied = field_.density(query_camera) > OCCUPIED_DENSITY_THRESHOLD
    metrics = occupancy_metrics(pred_occupied, gt_occupied, visible)
    return OccupancyFrame(query_tilted, pred_occupied, gt_occupied & ~visible, visible, metrics)


@dataclass
class LidarSweep:
    """The lidar scans that vote on one evaluated image.

    Attributes:
        scans_velo: each scan's points ``[M_j, 3]`` in its own velodyne frame; the first is the current scan.
        velo_to_camera: ``[S, 4, 4]`` velodyne-to-camera transforms into the evaluated (OpenCV) camera frame.
        frame_ids: the KITTI-360 frame id of each scan.
    """

    scans_velo: List[Float[Tensor, "_M 3"]]
    velo_to_camera: Float[Tensor, "S 4 4"]
    frame_ids: List[int]


def lidar_reference(
    sweep: LidarSweep, query_tilted: Float[Tensor, "N 3"], tilt_deg: float = CAMERA_TILT_DEG
) -> Tuple[Bool[Tensor, " N"], Bool[Tensor, " N"]]:
    """The raw 20-scan vote (``occupied``, not yet masked by visibility) and the current scan's ``visible_by_scan``
    at tilted-frame query points, on their device."""
    rotation = torch.eye(4, dtype=query_tilted.dtype, device=query_tilted.device)
    rotation[:3, :3] = tilt_rotation(tilt_deg)
    velo_to_tilted = rotation @ sweep.velo_to_camera.to(query_tilted)
    scans = [scan.to(query_tilted) for scan in sweep.scans_velo]
    return lidar_reference_occupancy(query_tilted, scans, velo_to_tilted)


def evaluate_official_frames(
    fields: Dict[str, FrameField],
    sweep: LidarSweep,
    query_tilted: Float[Tensor, "N 3"] | None = None,
    tilt_deg: float = CAMERA_TILT_DEG,
) -> Dict[str, OccupancyFrame]:
    """Score one image with the lidar protocol, for several models (the lidar reference is built once).

    Args:
        fields: the models (or baselines) for this image, by name.
        sweep: its lidar scans (see ``load_lidar_sweep``).
        query_tilted: query points in the tilted frame; default the official slice (12,800 points).
        tilt_deg: the tilted frame's angle (5 degrees for KITTI-360).
    """
    assert fields, "need at least one field"
    device = next(iter(fields.values())).depth.device
    if query_tilted is None:
        query_tilted = official_query_points().reshape(-1, 3)
    query_tilted = query_tilted.to(device, torch.float32)
    gt_occupied, visible_by_scan = lidar_reference(sweep, query_tilted, tilt_deg)
    query_camera = tilted_to_camera(query_tilted, tilt_deg)
    frames = {}
    for name, field_ in fields.items():
        # Visibility depends on each model's own depth map (a quirk of the protocol).
        visible = visible_by_scan | visible_before_depth(query_camera, field_.K.to(query_camera), field_.depth)
        frames[name] = score_frame(field_, query_tilted, gt_occupied, visible, tilt_deg)
    return frames


def evaluate_official_frame(
    field_: FrameField,
    sweep: LidarSweep,
    query_tilted: Float[Tensor, "N 3"] | None = None,
    tilt_deg: float = CAMERA_TILT_DEG,
) -> OccupancyFrame:
    """Score one image of one model with the lidar protocol (see ``evaluate_official_frames``)."""
    return evaluate_official_frames({"model": field_}, sweep, query_tilted, tilt_deg)["model"]


class Kitti360Calibration:
    """The KITTI-360 calibration chain of one sequence (the dataparser's ``Kitti360Rig``), queried per image."""

    def __init__(self, root: Path, sequence: str):
        self.paths = Kitti360Paths(root, sequence)
        self.frame_ids, self.poses = read_poses(self.paths.poses)
        # Only the rig's transforms are used here; they do not depend on the image size.
        self.rig = load_rig(Path(root), (192, 640), pitch_down_deg=15.0, yaw_deg=0.0, with_fisheyes=False)

    def rectified_camera_to_world(self, pose_index: int, camera: int = 0) -> np.ndarray:
        """``[4, 4]`` OpenCV c2w of rectified perspective camera ``camera`` at a ``poses.txt`` row."""
        if camera not in (0, 1):
            raise ValueError(f"occupancy evaluation needs a rectified perspective camera (0 or 1), got {camera}")
        self._check_index(pose_index)
        return self.poses[pose_index] @ self.rig.camera_to_pose[camera]

    def velodyne_to_world(self, pose_index: int) -> np.ndarray:
        """``[4, 4]`` velodyne-to-world transform at a ``poses.txt`` row."""
        self._check_index(pose_index)
        return self.poses[pose_index] @ self.rig.velo_to_pose

    def sweep_indices(self, pose_index: int, num_scans: int = OFFICIAL_NUM_SCANS) -> range:
        """The pose rows whose scans vote: this one and the next ``num_scans - 1`` (cut at the sequence end)."""
        self._check_index(pose_index)
        return range(pose_index, min(pose_index + num_scans, len(self.frame_ids)))

    def _check_index(self, pose_index: int) -> None:
        if not 0 <= pose_index < len(self.frame_ids):
            raise IndexError(f"pose index {pose_index} outside {self.paths.poses} ({len(self.frame_ids)} rows)")


def load_lidar_sweep(
    calibration: Kitti360Calibration, pose_index: int, camera: int = 0, num_scans: int = OFFICIAL_NUM_SCANS
) -> LidarSweep:
    """Read the scans voting on one image and chain them into its camera frame (float64, then float32)."""
    world_to_camera = np.linalg.inv(calibration.rectified_camera_to_world(pose_index, camera))
    scans: List[Tensor] = []
    transforms: List[np.ndarray] = []
    frame_ids: List[int] = []
    for index in calibration.sweep_indices(pose_index, num_scans):
        frame_id = int(calibration.frame_ids[index])
        points = read_velodyne(calibration.paths.velodyne(frame_id))
        if points.shape[0] == 0:
            raise ValueError(f"{calibration.paths.velodyne(frame_id)}: velodyne scan has no points")
        scans.append(torch.from_numpy(np.ascontiguousarray(points[:, :3], dtype=np.float32)))
        transforms.append(world_to_camera @ calibration.velodyne_to_world(index))
        frame_ids.append(frame_id)
    velo_to_camera = torch.from_numpy(np.stack(transforms).astype(np.float32))
    return LidarSweep(scans, velo_to_camera, frame_ids)
