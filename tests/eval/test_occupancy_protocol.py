"""The official lidar protocol end to end on hand-built lidar: numbers computed by hand, and the calibration chain."""

import math

import numpy as np
import pytest
import torch

from bts_studio.data.kitti360.reader import Kitti360FormatError
from bts_studio.eval.density_field import FrameField, depth_plus_band_field
from bts_studio.eval.occupancy import tilt_rotation
from bts_studio.eval.occupancy_protocol import (
    Kitti360Calibration,
    LidarSweep,
    evaluate_official_frame,
    load_lidar_sweep,
)

VELO_TO_TILTED = torch.tensor(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
WIDE_K = torch.tensor([[50.0, 0.0, 100.0], [0.0, 50.0, 100.0], [0.0, 0.0, 1.0]])  # 200 x 200, ~126 deg wide


def ring(radius: float, count: int = 3600) -> torch.Tensor:
    """Returns on a circle around the velodyne, 0.5 m below the camera (inside the 0..0.75 m slice)."""
    angles = -math.pi + (torch.arange(count, dtype=torch.float64) + 0.5) * (2 * math.pi / count)
    return torch.stack([radius * angles.cos(), radius * angles.sin(), torch.full_like(angles, -0.5)], -1).float()


def hand_sweep() -> LidarSweep:
    """The current scan sees something at 8 m (it went away later); 19 later scans see a wall ring at 10 m."""
    camera_from_tilted = torch.eye(4)
    camera_from_tilted[:3, :3] = tilt_rotation().T
    velo_to_camera = (camera_from_tilted @ VELO_TO_TILTED).expand(20, 4, 4).clone()
    return LidarSweep([ring(8.0)] + [ring(10.0)] * 19, velo_to_camera, list(range(20)))


# Five points straight ahead on the official slice (y = 0.375 m): A 5 m, B 9 m, C 9.95 m, D 12 m, E 15 m.
QUERY = torch.tensor([[0.0, 0.375, z] for z in (5.0, 9.0, 9.95, 12.0, 15.0)])


def model_occupied_beyond(z_camera: float) -> FrameField:
    """A hand-made model: depth 8.5 m everywhere, density 10 where camera z > ``z_camera``."""
    return FrameField(lambda p: (p[:, 2] > z_camera).float() * 10.0, torch.full((200, 200), 8.5), WIDE_K)


def test_official_protocol_by_hand():
    # Quirky ranges sqrt(z^2 + 0.375^2 + 1): A 5.11, B 9.06, C 10.007, D 12.05, E 15.04.
    # Votes: A 0, B 1 (only the 8 m scan), C, D, E 20 -> reference occupied C, D, E (C by the +1 quirk).
    # Current scan sees only A free; camera z = 0.0327 + 0.9962 z: A 5.01, B 9.00, C 9.95, D 11.99, E 14.98;
    # depth 8.5 -> visible by depth: A. Model: occupied where camera z > 11 -> D, E.
    frame = evaluate_official_frame(model_occupied_beyond(11.0), hand_sweep(), QUERY)
    assert frame.gt_occupied.tolist() == [False, False, True, True, True]
    assert frame.visible.tolist() == [True, False, False, False, False]
    assert frame.pred_occupied.tolist() == [False, False, False, True, True]
    metrics = frame.metrics
    assert metrics["o_acc"] == pytest.approx(4 / 5)  # only C is wrong
    assert metrics["ie_acc"] == pytest.approx(3 / 4)  # invisible B, C, D, E; C wrong
    assert metrics["ie_rec"] == pytest.approx(1.0)  # invisible and empty: B, predicted empty
    assert metrics["o_prec"] == pytest.approx(1.0) and metrics["o_rec"] == pytest.approx(2 / 3)
    assert metrics["ie_prec"] == pytest.approx(1 / 2)  # invisible, predicted empty: B, C; only B is empty
    assert metrics["t_ie"] == 1 and metrics["t_no_nop_nv"] == 1


def test_depth_plus_4m_baseline_by_hand_through_the_same_code():
    # Occupied where 8.5 < camera z <= 12.5: B, C, D. Visibility is the model's (same depth map).
    model = model_occupied_beyond(11.0)
    frame = evaluate_official_frame(depth_plus_band_field(model, 4.0), hand_sweep(), QUERY)
    assert frame.pred_occupied.tolist() == [False, True, True, True, False]
    assert frame.visible.tolist() == [True, False, False, False, False]
    assert frame.metrics["o_acc"] == pytest.approx(3 / 5)  # B and E wrong
    assert frame.metrics["ie_acc"] == pytest.approx(2 / 4)
    assert frame.metrics["ie_rec"] == pytest.approx(0.0)  # B, the only invisible empty point, is filled


def test_official_grid_all_empty_model_matches_a_direct_count():
    # Full 12,800-point slice; all-empty model whose depth (3 m) hides nothing. Reference by the definition.
    all_empty = FrameField(lambda p: torch.zeros(len(p)), torch.full((200, 200), 3.0), WIDE_K)
    frame = evaluate_official_frame(all_empty, hand_sweep())
    assert frame.query_tilted.shape == (12800, 3)
    x, z = frame.query_tilted[:, 0].double(), frame.query_tilted[:, 2].double()
    quirky = torch.sqrt(x**2 + z**2 + 0.375**2 + 1.0)
    occupied = quirky > 10.0  # 20 votes beyond the 10 m ring, at most 1 (the 8 m scan) in front of it
    visible = quirky < 8.0
    assert torch.equal(frame.gt_occupied, occupied & ~visible)
    assert torch.equal(frame.visible, visible)
    expected_ie_acc = (~occupied[~visible]).double().mean().item()
    assert frame.metrics["o_acc"] == pytest.approx(1.0 - occupied.double().mean().item())
    assert frame.metrics["ie_acc"] == pytest.approx(expected_ie_acc)
    assert frame.metrics["ie_rec"] == 1.0


# --- the KITTI-360 calibration chain, on files written in the official format ---------------------------------


def rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(4)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def translation(x: float, y: float, z: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


def row(matrix: np.ndarray) -> str:
    return " ".join(f"{value:.12f}" for value in matrix[:3, :4].reshape(-1))


CAM_TO_POSE = translation(1.5, -0.3, 0.9) @ rotation(2, -90) @ rotation(0, -91)  # camera axes -> IMU, roughly
CAM_TO_VELO = translation(0.2, -0.8, -0.3) @ rotation(0, 90) @ rotation(1, 90) @ rotation(2, 1.0)
R_RECT = rotation(1, 0.7)


def pose(index: int) -> np.ndarray:
    return translation(1000.0 + 2.0 * index, 3000.0 + 0.5 * index, 110.0) @ rotation(2, 3.0 * index)


def write_kitti360(root, frame_ids, scans):
    calibration = root / "calibration"
    calibration.mkdir(parents=True)
    rect = R_RECT[:3, :3].reshape(-1)
    projection = "552.5 0 682.0 0 0 552.5 238.7 0 0 0 1 0"
    (calibration / "perspective.txt").write_text(
        "".join(
            f"P_rect_0{c}: {projection}\nR_rect_0{c}: {' '.join(map(str, rect))}\nS_rect_0{c}: 1408 376\n"
            for c in (0, 1)
        )
    )
    (calibration / "calib_cam_to_pose.txt").write_text("".join(f"image_0{c}: {row(CAM_TO_POSE)}\n" for c in range(4)))
    (calibration / "calib_cam_to_velo.txt").write_text(row(CAM_TO_VELO) + "\n")
    sequence = "2013_05_28_drive_0000_sync"
    poses_dir = root / "data_poses" / sequence
    poses_dir.mkdir(parents=True)
    (poses_dir / "poses.txt").write_text("".join(f"{f} {row(pose(i))}\n" for i, f in enumerate(frame_ids)))
    velodyne = root / "data_3d_raw" / sequence / "velodyne_points" / "data"
    velodyne.mkdir(parents=True)
    for frame_id, scan in zip(frame_ids, scans, strict=False):
        if scan is not None:
            scan.astype("<f4").tofile(velodyne / f"{frame_id:010d}.bin")
    return sequence


def test_calibration_chain_puts_world_points_where_the_camera_sees_them(tmp_path):
    frame_ids = [3, 4, 6, 9]
    world_points = np.array([[1005.0, 3008.0, 109.5], [1010.0, 2995.0, 111.0], [990.0, 3001.0, 110.2]])
    velo_to_pose = CAM_TO_POSE @ np.linalg.inv(CAM_TO_VELO)
    scans = []
    for index in range(len(frame_ids)):
        world_to_velo = np.linalg.inv(pose(index) @ velo_to_pose)
        points = world_points @ world_to_velo[:3, :3].T + world_to_velo[:3, 3]
        scans.append(np.concatenate([points, np.ones((3, 1))], axis=1))
    sequence = write_kitti360(tmp_path, frame_ids, scans)
    calibration = Kitti360Calibration(tmp_path, sequence)
    sweep = load_lidar_sweep(calibration, pose_index=1)
    assert sweep.frame_ids == [4, 6, 9]  # the next rows of poses.txt, cut at the sequence end
    camera_to_world = pose(1) @ CAM_TO_POSE @ np.linalg.inv(R_RECT)
    expected = world_points @ np.linalg.inv(camera_to_world)[:3, :3].T + np.linalg.inv(camera_to_world)[:3, 3]
    for scan, transform in zip(sweep.scans_velo, sweep.velo_to_camera, strict=False):
        in_camera = scan.double() @ transform[:3, :3].double().T + transform[:3, 3].double()
        assert np.allclose(in_camera.numpy(), expected, atol=1e-3)


def test_missing_scan_names_the_file_and_the_download(tmp_path):
    sequence = write_kitti360(tmp_path, [0, 1], [np.zeros((5, 4)), None])
    with pytest.raises(Kitti360FormatError, match=r"0000000001\.bin.*Raw Velodyne Scans"):
        load_lidar_sweep(Kitti360Calibration(tmp_path, sequence), pose_index=0)
