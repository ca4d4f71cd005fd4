"""The KITTI-360 camera rig as the dataparser sees it: four pinhole cameras at the target resolution.

Camera ids follow KITTI-360's folders: 0 = ``image_00`` (left rectified perspective), 1 = ``image_01``
(right rectified perspective), 2 = ``image_02`` (left fisheye, as a virtual pinhole), 3 = ``image_03``
(right fisheye, as a virtual pinhole). All four share the rectified perspective intrinsics ``P_rect_00``
scaled to the target size, as in BTS.

Camera-to-pose transforms (OpenCV axes; the "pose" frame is the IMU/GPS frame that ``poses.txt`` maps to
the world), as BTS's ``Kitti360Dataset._load_calibs`` builds them:

- rectified camera ``c`` in {0, 1}: ``calib_cam_to_pose[image_0c] @ inv(R_rect_0c)``;
- fisheye ``c`` in {2, 3} as virtual pinhole: ``calib_cam_to_pose[image_0c] @ R_virtual`` (pitched down);
- velodyne: ``calib_cam_to_pose[image_00] @ inv(calib_cam_to_velo)``.

A camera's camera-to-world pose at a frame is ``poses.txt[frame] @ camera_to_pose``.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from jaxtyping import Float

from bts_studio.core.fisheye import MeiParams
from bts_studio.data.checks import nested_root_hint
from bts_studio.data.kitti360.fisheye_resample import virtual_camera_rotation
from bts_studio.data.kitti360.reader import (
    DOWNLOAD_CALIBRATION,
    Kitti360FormatError,
    Kitti360Paths,
    read_cam_to_pose,
    read_cam_to_velo,
    read_mei_fisheye,
    read_perspective_calibration,
)

CAMERA_FOLDERS = ("image_00", "image_01", "image_02", "image_03")
"""Camera id -> KITTI-360 image folder name."""

PERSPECTIVE_IDS = (0, 1)
FISHEYE_IDS = (2, 3)


@dataclass(frozen=True)
class Kitti360Rig:
    """Calibration of the four cameras at one target resolution.

    Attributes:
        K: ``[3, 3]`` intrinsics of every camera at the target size, nerfstudio pixel units (cx, cy + 0.5).
        target_size: ``(height, width)`` of the parsed images.
        perspective_size: ``(height, width)`` of the rectified originals (``S_rect_00``).
        camera_to_pose: ``[4, 4, 4]`` per camera id, OpenCV axes, float64.
        velo_to_pose: ``[4, 4]`` velodyne -> pose frame, float64.
        fisheyes: MEI intrinsics of cameras 2 and 3 (nerfstudio units), keyed by camera id.
        fisheye_rotations: virtual-to-fisheye rotation ``[3, 3]`` of cameras 2 and 3.
    """

    K: Float[np.ndarray, "3 3"]
    target_size: Tuple[int, int]
    perspective_size: Tuple[int, int]
    camera_to_pose: Float[np.ndarray, "4 4 4"]
    velo_to_pose: Float[np.ndarray, "4 4"]
    fisheyes: Dict[int, MeiParams]
    fisheye_rotations: Dict[int, Float[np.ndarray, "3 3"]]

    def K_tensor(self) -> torch.Tensor:
        """``K`` as a float64 tensor."""
        return torch.from_numpy(self.K.copy())

    def velo_to_camera(self, camera: int) -> Float[np.ndarray, "4 4"]:
        """Velodyne -> OpenCV camera frame of a rectified perspective camera."""
        return np.linalg.inv(self.camera_to_pose[camera]) @ self.velo_to_pose


def frame_group_layout(side: int, t: int, last: int, fisheye_offset: int) -> List[Tuple[int, int]]:
    """``(camera id, pose row)`` of the 8 images of one BTS frame group, in the dataparser's column order.

    ``side`` is the input camera (0 left, 1 right), ``t`` its pose row, ``last`` the sequence's last pose row (later
    frames are clamped to it). Columns: input and its ``t + 1``, the stereo partner at ``t`` and ``t + 1``, the
    same-side fisheye at ``t + offset`` and ``t + offset + 1``, the other fisheye at the same two rows (BTS's
    ``Kitti360Dataset``: fisheyes ``fisheye_offset`` = 10 frames later, since they look sideways).
    """
    t1, tf, tf1 = (min(t + step, last) for step in (1, fisheye_offset, fisheye_offset + 1))
    return [
        (side, t),
        (side, t1),
        (1 - side, t),
        (1 - side, t1),
        (2 + side, tf),
        (2 + side, tf1),
        (3 - side, tf),
        (3 - side, tf1),
    ]


def _rotation_to_4x4(rotation: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    return matrix


def scale_intrinsics(P_rect: np.ndarray, source_size: Tuple[int, int], target_size: Tuple[int, int]) -> np.ndarray:
    """Intrinsics of a rectified camera after resizing its image, in nerfstudio pixel units.

    Args:
        P_rect: ``[3, 4]`` KITTI-360 projection (OpenCV pixel convention).
        source_size: ``(height, width)`` of the rectified image.
        target_size: ``(height, width)`` after the (per-axis) resize.

    Returns:
        ``[3, 3]`` with ``fx * W/W0``, ``fy * H/H0``, ``(cx + 0.5) * W/W0``, ``(cy + 0.5) * H/H0``.
    """
    scale_x = target_size[1] / source_size[1]
    scale_y = target_size[0] / source_size[0]
    K = np.eye(3)
    K[0, 0] = P_rect[0, 0] * scale_x
    K[1, 1] = P_rect[1, 1] * scale_y
    K[0, 2] = (P_rect[0, 2] + 0.5) * scale_x
    K[1, 2] = (P_rect[1, 2] + 0.5) * scale_y
    return K


def load_rig(
    root: Path, target_size: Tuple[int, int], pitch_down_deg: float, yaw_deg: float, with_fisheyes: bool
) -> Kitti360Rig:
    """Read ``calibration/`` and build the rig.

    Args:
        root: KITTI-360 root.
        target_size: ``(height, width)`` of the parsed images.
        pitch_down_deg: downward pitch of the virtual fisheye pinholes.
        yaw_deg: BTS's yaw angle of the virtual fisheye pinholes (mirrored for the right one).
        with_fisheyes: read ``image_02.yaml`` / ``image_03.yaml`` too.

    Raises:
        Kitti360FormatError: ``calibration/`` or one of its files is missing or malformed.
    """
    paths = Kitti360Paths(root, sequence="")  # calibration paths do not depend on the sequence
    if not paths.calibration_dir.is_dir():
        hint = nested_root_hint(root, lambda path: (path / "calibration").is_dir())
        raise Kitti360FormatError(
            f"{paths.calibration_dir}: folder not found. It is part of the KITTI-360 download {DOWNLOAD_CALIBRATION}"
            f"{hint or '.'}"
        )
    perspective = read_perspective_calibration(paths.perspective_calibration)
    cam_to_pose = read_cam_to_pose(paths.cam_to_pose)
    cam0_to_velo = read_cam_to_velo(paths.cam_to_velo)
    width0, height0 = (int(v) for v in perspective["S_rect_00"])
    camera_to_pose = np.stack([np.eye(4)] * 4)
    for camera in PERSPECTIVE_IDS:
        rectification = _rotation_to_4x4(perspective[f"R_rect_{camera:02d}"])
        camera_to_pose[camera] = cam_to_pose[CAMERA_FOLDERS[camera]] @ np.linalg.inv(rectification)
    fisheyes: Dict[int, MeiParams] = {}
    rotations: Dict[int, np.ndarray] = {}
    for camera in FISHEYE_IDS:
        rotations[camera] = virtual_camera_rotation(pitch_down_deg, yaw_deg, mirror=camera == 3)
        camera_to_pose[camera] = cam_to_pose[CAMERA_FOLDERS[camera]] @ _rotation_to_4x4(rotations[camera])
        if with_fisheyes:
            fisheyes[camera] = MeiParams.from_opencv(read_mei_fisheye(paths.fisheye_calibration(camera)))
    return Kitti360Rig(
        K=scale_intrinsics(perspective["P_rect_00"], (height0, width0), target_size),
        target_size=tuple(target_size),
        perspective_size=(height0, width0),
        camera_to_pose=camera_to_pose,
        velo_to_pose=cam_to_pose["image_00"] @ np.linalg.inv(cam0_to_velo),
        fisheyes=fisheyes,
        fisheye_rotations=rotations,
    )
