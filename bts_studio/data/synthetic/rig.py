"""The synthetic KITTI-360 sensor rig: cameras, velodyne and their calibration, and the chain to the world.

The geometry approximates the real KITTI-360 rig (rounded values of the official calibration): two
forward-looking rectified perspective cameras about 1.55 m above the road with a ~0.59 m baseline, two
side-looking MEI fisheyes higher up (image_02 looks left, image_03 right), and a velodyne HDL-64E on the
roof. The IMU/GPS "pose" frame is x forward, y right, z down. Two things are made exact on purpose:

* the rectified frames of image_00 and image_01 share one orientation and image_01's centre lies exactly
  ``baseline`` metres along the rectified x axis (so ``P_rect_01``'s ``-fx * baseline`` tells the truth);
* fisheye ``p1 = p2 = 0``: the official devkit and BTS ignore the tangential terms, so with zeros every
  implementation of the model agrees.

:func:`load_rig` rebuilds the rig from the written calibration files, so rendering uses exactly what a
reader of the files sees. The chain itself is in :mod:`bts_studio.data.kitti360.reader` and
docs/conventions.md ("KITTI-360 frames").
"""

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.kitti360.reader import MeiFisheye

FULL_PERSPECTIVE_SIZE = (1408, 376)
FULL_FISHEYE_SIZE = (1400, 1400)
FOCAL = 552.55
PRINCIPAL_POINT = (682.05, 238.77)
BASELINE = 0.5942

# Unrectified camera -> pose, rounded from the official calib_cam_to_pose.txt (rotation re-orthonormalised).
_CAM_TO_POSE_ROUNDED = {
    0: ([[0.0372, -0.0986, 0.9944], [0.9993, -0.0054, -0.0379], [0.0091, 0.9951, 0.0983]], [1.5753, 0.0044, -0.65]),
    1: ([[0.0194, -0.1052, 0.9943], [0.9997, -0.0101, -0.0206], [0.0122, 0.9944, 0.1049]], None),
    2: ([[0.9995, 0.0041, -0.0308], [-0.0308, 0.0101, -0.9995], [-0.0038, 0.9999, 0.0102]], [0.7264, -0.15, -1.0686]),
    3: ([[-0.9997, 0.0006, -0.0252], [-0.0252, 0.0008, 0.9997], [0.0006, 1.0, -0.0008]], [0.7017, 0.7464, -1.0752]),
}
_CAM_TO_VELO_ROUNDED = (
    [[0.0431, -0.0883, 0.9952], [-0.999, 0.0078, 0.0439], [-0.0116, -0.9961, -0.0879]],
    [0.8044, 0.2993, -0.177],
)
_RECT_00_ROUNDED = [[0.99997, -0.00714, -0.00009], [0.00714, 0.99997, -0.00325], [0.00011, 0.00325, 0.99999]]

# MEI intrinsics at full resolution (OpenCV pixel units), rounded from the official image_02/03.yaml.
_FISHEYE_FULL = {
    2: dict(xi=2.2134, k1=0.0168, k2=1.6549, gamma1=1336.3, gamma2=1335.8, u0=716.9, v0=705.8),
    3: dict(xi=2.5535, k1=0.0494, k2=4.5068, gamma1=1485.4, gamma2=1484.9, u0=698.9, v0=698.1),
}


def _orthonormal(matrix) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    rotation = u @ vt
    assert np.linalg.det(rotation) > 0
    return rotation


def _rigid(rotation: np.ndarray, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def scaled_size(size: Tuple[int, int], scale: float) -> Tuple[int, int]:
    """Image size at ``scale`` (at least 8 x 8 pixels)."""
    return max(8, int(round(size[0] * scale))), max(8, int(round(size[1] * scale)))


def _scale_principal(value: float, factor: float) -> float:
    # OpenCV coordinates put pixel centres on integers: scale the continuous (pixel-corner) coordinate.
    return (value + 0.5) * factor - 0.5


@dataclass
class Rig:
    """Calibration of all sensors (what the calibration files hold), at one image scale.

    Attributes:
        cam_to_pose: ``{0..3: [4, 4]}`` unrectified camera -> IMU/GPS pose frame.
        cam_to_velo: ``[4, 4]`` unrectified camera 0 -> velodyne.
        rect_rotation: ``{0, 1: [3, 3]}`` ``R_rect_0x``.
        projection: ``{0, 1: [3, 4]}`` ``P_rect_0x`` (OpenCV pixel units).
        perspective_size: ``(width, height)`` of the rectified images.
        fisheye: ``{2, 3: MeiFisheye}`` (OpenCV pixel units).
    """

    cam_to_pose: Dict[int, np.ndarray]
    cam_to_velo: np.ndarray
    rect_rotation: Dict[int, np.ndarray]
    projection: Dict[int, np.ndarray]
    perspective_size: Tuple[int, int]
    fisheye: Dict[int, MeiFisheye]

    def camera_to_world(self, pose: np.ndarray, camera: int) -> np.ndarray:
        """Camera -> world ``[4, 4]`` (OpenCV axes; rectified frame for cameras 0 and 1)."""
        if camera in formats.PERSPECTIVE_CAMERAS:
            return formats.perspective_cam_to_world(pose, self.cam_to_pose[camera], self.rect_rotation[camera])
        return formats.fisheye_cam_to_world(pose, self.cam_to_pose[camera])

    def velodyne_to_world(self, pose: np.ndarray) -> np.ndarray:
        return formats.velodyne_to_world(pose, self.cam_to_pose[0], self.cam_to_velo)

    @property
    def baseline(self) -> float:
        """Stereo baseline in metres, from ``P_rect_01``."""
        return float(-self.projection[1][0, 3] / self.projection[1][0, 0])


def build_rig(scale: float) -> Rig:
    """The synthetic rig for images scaled by ``scale`` (1 = KITTI-360's 1408 x 376 and 1400 x 1400)."""
    cam_to_pose = {}
    for camera in (0, 2, 3):
        rotation, translation = _CAM_TO_POSE_ROUNDED[camera]
        cam_to_pose[camera] = _rigid(_orthonormal(rotation), translation)
    rect_00 = _orthonormal(_RECT_00_ROUNDED)
    # Orientation of the shared rectified frame in the pose frame; image_01 is placed on its x axis.
    rectified_to_pose = cam_to_pose[0][:3, :3] @ rect_00.T
    rotation_01 = _orthonormal(_CAM_TO_POSE_ROUNDED[1][0])
    rect_01 = rectified_to_pose.T @ rotation_01
    center_01 = cam_to_pose[0][:3, 3] + rectified_to_pose @ np.array([BASELINE, 0.0, 0.0])
    cam_to_pose[1] = _rigid(rotation_01, center_01)
    cam_to_velo = _rigid(_orthonormal(_CAM_TO_VELO_ROUNDED[0]), _CAM_TO_VELO_ROUNDED[1])

    width, height = scaled_size(FULL_PERSPECTIVE_SIZE, scale)
    sx, sy = width / FULL_PERSPECTIVE_SIZE[0], height / FULL_PERSPECTIVE_SIZE[1]
    fx, fy = FOCAL * sx, FOCAL * sy
    cx, cy = _scale_principal(PRINCIPAL_POINT[0], sx), _scale_principal(PRINCIPAL_POINT[1], sy)
    projection = {}
    for camera in formats.PERSPECTIVE_CAMERAS:
        matrix = np.array([[fx, 0.0, cx, 0.0], [0.0, fy, cy, 0.0], [0.0, 0.0, 1.0, 0.0]])
        if camera == 1:
            matrix[0, 3] = -fx * BASELINE
        projection[camera] = matrix

    fish_width, fish_height = scaled_size(FULL_FISHEYE_SIZE, scale)
    fx_scale, fy_scale = fish_width / FULL_FISHEYE_SIZE[0], fish_height / FULL_FISHEYE_SIZE[1]
    fisheye = {}
    for camera, values in _FISHEYE_FULL.items():
        fisheye[camera] = MeiFisheye(
            xi=values["xi"],
            k1=values["k1"],
            k2=values["k2"],
            p1=0.0,
            p2=0.0,
            gamma1=values["gamma1"] * fx_scale,
            gamma2=values["gamma2"] * fy_scale,
            u0=_scale_principal(values["u0"], fx_scale),
            v0=_scale_principal(values["v0"], fy_scale),
            width=fish_width,
            height=fish_height,
        )
    return Rig(
        cam_to_pose=cam_to_pose,
        cam_to_velo=cam_to_velo,
        rect_rotation={0: rect_00, 1: rect_01},
        projection=projection,
        perspective_size=(width, height),
        fisheye=fisheye,
    )


def load_rig(root) -> Rig:
    """Read the rig back from ``root/calibration`` with the KITTI-360 readers."""
    paths = formats.Kitti360Paths(root, 0)
    perspective = formats.read_perspective_calibration(paths.perspective_calibration)
    size = perspective["S_rect_00"]
    return Rig(
        cam_to_pose={int(key[-2:]): value for key, value in formats.read_cam_to_pose(paths.cam_to_pose).items()},
        cam_to_velo=formats.read_cam_to_velo(paths.cam_to_velo),
        rect_rotation={camera: perspective[f"R_rect_{camera:02d}"] for camera in formats.PERSPECTIVE_CAMERAS},
        projection={camera: perspective[f"P_rect_{camera:02d}"] for camera in formats.PERSPECTIVE_CAMERAS},
        perspective_size=(int(size[0]), int(size[1])),
        fisheye={
            camera: formats.read_mei_fisheye(paths.fisheye_calibration(camera)) for camera in formats.FISHEYE_CAMERAS
        },
    )
