"""Ground-truth z-depth maps from one velodyne scan, as the BTS evaluation loader builds them.

BTS (``Kitti360Dataset.load_depth``) projects the scan of the input frame into the rectified camera at the
target resolution and keeps, per pixel, the nearest point; there is no crop and no depth cap. We do the
same with the exact pinhole of the parsed nerfstudio camera (docs/conventions.md, "Pixels"): a point lands
in the pixel that contains its continuous projection, ``floor(u), floor(v)``. BTS rounds a projection made
without the half-pixel offset instead, which moves a point by at most about a quarter of a target pixel,
and it does not drop points behind the camera before the per-pixel minimum; we do.
"""

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from bts_studio.core.geometry import project_points


def nearest_depth_map(
    points_camera: Float[Tensor, "N 3"], K: Float[Tensor, "3 3"], height: int, width: int, min_depth: float = 1e-3
) -> Float[Tensor, "H W"]:
    """Splat camera-frame points into a z-depth image, keeping the nearest point per pixel.

    Args:
        points_camera: points in the OpenCV camera frame (x right, y down, z forward).
        K: intrinsics in nerfstudio pixel units.
        height: image height in pixels.
        width: image width in pixels.
        min_depth: points with ``z <= min_depth`` (behind or at the camera) are dropped.

    Returns:
        z-depth per pixel; 0 where no point projects.
    """
    assert points_camera.ndim == 2 and points_camera.shape[-1] == 3, f"expected [N, 3], got {points_camera.shape}"
    assert K.shape == (3, 3), f"expected K [3, 3], got {tuple(K.shape)}"
    identity = torch.eye(3, 4, dtype=points_camera.dtype)
    uv, z = project_points(points_camera, K.to(points_camera.dtype), identity)
    column, row = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
    valid = (z > min_depth) & (column >= 0) & (column < width) & (row >= 0) & (row < height)
    flat_index = row[valid] * width + column[valid]
    depth = torch.full((height * width,), float("inf"), dtype=points_camera.dtype)
    depth.scatter_reduce_(0, flat_index, z[valid], reduce="amin")
    depth[torch.isinf(depth)] = 0.0
    return depth.view(height, width)


def velodyne_depth_map(
    scan: Float[np.ndarray, "N 4"],
    velo_to_camera: Float[np.ndarray, "4 4"],
    K: Float[Tensor, "3 3"],
    height: int,
    width: int,
) -> Float[np.ndarray, "H W"]:
    """z-depth map of one velodyne scan in one rectified camera.

    Args:
        scan: velodyne points ``x, y, z, reflectance`` in the velodyne frame (``data_3d_raw/.../*.bin``).
        velo_to_camera: rigid transform from the velodyne frame to the OpenCV camera frame.
        K: the camera's intrinsics at the target resolution, nerfstudio pixel units.
        height: target height.
        width: target width.

    Returns:
        float32 z-depth, 0 where no point.
    """
    assert scan.ndim == 2 and scan.shape[1] == 4, f"expected a velodyne scan [N, 4], got {scan.shape}"
    transform = np.asarray(velo_to_camera, dtype=np.float64)
    points = scan[:, :3].astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
    depth = nearest_depth_map(torch.from_numpy(points), K.double(), height, width)
    return depth.numpy().astype(np.float32)


def save_depth_atomically(path: Path, depth: np.ndarray) -> None:
    """Write a depth map as ``.npy`` under a temporary name, then rename it into place."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp{np.random.randint(1 << 30)}.npy")
    try:
        np.save(temporary, depth.astype(np.float32))
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
