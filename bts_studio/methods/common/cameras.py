"""nerfstudio ``Cameras`` <-> OpenCV pinhole matrices, the form ``bts_studio.core`` projects with.

nerfstudio stores OpenGL camera-to-world poses ``[N, 3, 4]`` and per-camera ``fx, fy, cx, cy`` in pixel units
(pixel (0, 0) covers [0, 1]^2, docs/conventions.md "Pixels"). ``core.geometry`` takes pixel ``K`` and OpenCV
poses. Only pinhole cameras convert; a fisheye camera's model is not a matrix.
"""

from typing import Tuple

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from bts_studio.core.geometry import intrinsics_matrix, invert_pose, opencv_to_opengl, to_homogeneous_pose

__all__ = ["cameras_to_opencv", "cameras_to_opencv_w2c", "opencv_to_cameras"]


def _flat(cameras: Cameras) -> Cameras:
    return cameras.flatten() if cameras.shape else cameras.reshape((1,))


def cameras_to_opencv(cameras: Cameras) -> Tuple[Float[Tensor, "N 3 3"], Float[Tensor, "N 4 4"]]:
    """Pixel intrinsics ``K [N, 3, 3]`` and OpenCV camera-to-world poses ``[N, 4, 4]`` of ``Cameras`` (any shape,
    flattened to ``N``)."""
    cameras = _flat(cameras)
    K = intrinsics_matrix(cameras.fx[..., 0], cameras.fy[..., 0], cameras.cx[..., 0], cameras.cy[..., 0])
    c2w = to_homogeneous_pose(opencv_to_opengl(cameras.camera_to_worlds))
    return K, c2w


def cameras_to_opencv_w2c(cameras: Cameras) -> Tuple[Float[Tensor, "N 3 3"], Float[Tensor, "N 3 4"]]:
    """Pixel intrinsics ``K [N, 3, 3]`` and OpenCV world-to-camera poses ``[N, 3, 4]`` (what ``project_points``
    takes) of ``Cameras`` (any shape, flattened to ``N``)."""
    K, c2w = cameras_to_opencv(cameras)
    return K, invert_pose(c2w)[:, :3]


def opencv_to_cameras(
    K: Float[Tensor, "N 3 3"],
    c2w_opencv: Float[Tensor, "N 3 4"],
    width: int,
    height: int,
) -> Cameras:
    """Perspective nerfstudio ``Cameras [N]`` from pixel ``K`` and OpenCV camera-to-world poses (``[N, 3|4, 4]``).

    The inverse of :func:`cameras_to_opencv` for pinhole cameras of one image size.
    """
    assert K.ndim == 3 and K.shape[-2:] == (3, 3), f"K must be [N, 3, 3], got {tuple(K.shape)}"
    assert c2w_opencv.ndim == 3 and c2w_opencv.shape[-1] == 4, f"c2w must be [N, 3|4, 4], got {c2w_opencv.shape}"
    assert len(K) == len(c2w_opencv), f"{len(K)} intrinsics but {len(c2w_opencv)} poses"
    return Cameras(
        camera_to_worlds=opencv_to_opengl(c2w_opencv[:, :3]),
        fx=K[:, 0, 0:1],
        fy=K[:, 1, 1:2],
        cx=K[:, 0, 2:3],
        cy=K[:, 1, 2:3],
        width=torch.full((len(K), 1), int(width), dtype=torch.long),
        height=torch.full((len(K), 1), int(height), dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
    )
