"""Camera geometry: axis conventions, pose inversion, projection and pixel normalisation.

Vocabulary used in this file (see docs/conventions.md for the conventions themselves):
    c2w: camera-to-world pose ``[..., 3, 4]`` or ``[..., 4, 4]``; w2c its inverse.
    K: pinhole intrinsics ``[..., 3, 3]`` in nerfstudio pixel units (pixel (0, 0) covers [0, 1]^2).
    uv: continuous pixel coordinates (u = column axis, v = row axis) in the same units.
    z: z-depth along the OpenCV optical axis (+z forward).

Everything here is framework-free torch and differentiable.
"""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "OPENCV_TO_OPENGL",
    "intrinsics_matrix",
    "invert_pose",
    "normalize_intrinsics",
    "opencv_to_opengl",
    "pixels_to_normalized",
    "project_points",
    "ray_distance_to_z_depth",
    "to_homogeneous_pose",
    "world_to_camera_points",
]

OPENCV_TO_OPENGL = (1.0, -1.0, -1.0)
"""Per-axis sign flip of the camera frame; it is its own inverse."""


def opencv_to_opengl(c2w: Float[Tensor, "*batch rows 4"]) -> Float[Tensor, "*batch rows 4"]:
    """Convert an OpenCV camera-to-world pose to nerfstudio's OpenGL one, or back (the flip is an involution).

    Args:
        c2w: poses ``[..., 3, 4]`` or ``[..., 4, 4]``.

    Returns:
        The poses with the camera's y and z axes negated (rotation columns 1 and 2).
    """
    assert c2w.shape[-2] in (3, 4) and c2w.shape[-1] == 4, f"expected [..., 3|4, 4], got {tuple(c2w.shape)}"
    flip = c2w.new_tensor([*OPENCV_TO_OPENGL, 1.0])
    return c2w * flip


def to_homogeneous_pose(pose: Float[Tensor, "*batch rows 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Append the ``[0, 0, 0, 1]`` row to ``[..., 3, 4]`` poses (``[..., 4, 4]`` pass through)."""
    if pose.shape[-2] == 4:
        return pose
    assert pose.shape[-2:] == (3, 4), f"expected [..., 3, 4], got {tuple(pose.shape)}"
    bottom = pose.new_zeros(*pose.shape[:-2], 1, 4)
    bottom[..., 0, 3] = 1.0
    return torch.cat([pose, bottom], dim=-2)


def invert_pose(pose: Float[Tensor, "*batch rows 4"]) -> Float[Tensor, "*batch rows 4"]:
    """Invert rigid poses ``[R | t]`` -> ``[R^T | -R^T t]``; returns the same row count it was given."""
    assert pose.shape[-1] == 4 and pose.shape[-2] in (3, 4), f"expected [..., 3|4, 4], got {tuple(pose.shape)}"
    rotation = pose[..., :3, :3]
    translation = pose[..., :3, 3:]
    rotation_t = rotation.transpose(-1, -2)
    inverse = torch.cat([rotation_t, -rotation_t @ translation], dim=-1)
    return to_homogeneous_pose(inverse) if pose.shape[-2] == 4 else inverse


def world_to_camera_points(
    points: Float[Tensor, "*#batch N 3"], w2c: Float[Tensor, "*#batch rows 4"]
) -> Float[Tensor, "*#batch N 3"]:
    """Transform world points into a camera frame (whatever axis convention ``w2c`` encodes).

    ``w2c`` is ``[..., 3, 4]`` or ``[..., 4, 4]``; the batch dimensions of points and poses broadcast.
    """
    assert points.shape[-1] == 3, f"points must be [..., N, 3], got {tuple(points.shape)}"
    return points @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]


def project_points(
    points: Float[Tensor, "*#batch N 3"],
    K: Float[Tensor, "*#batch 3 3"],
    w2c_opencv: Float[Tensor, "*#batch rows 4"],
    min_z: float = 1e-3,
) -> tuple[Float[Tensor, "*#batch N 2"], Float[Tensor, "*#batch N"]]:
    """Project world points through an OpenCV pinhole camera.

    Args:
        points: world points.
        K: intrinsics in nerfstudio pixel units (docs/conventions.md, "Pixels").
        w2c_opencv: world-to-camera pose in OpenCV axes (``[..., 3|4, 4]``); batch dimensions broadcast.
        min_z: the divisor is clamped to at least this (points behind the camera project to garbage;
            callers test ``z > min_z`` for validity).

    Returns:
        ``uv`` continuous pixel coordinates and ``z`` depths (unclamped, so callers can mask).
    """
    camera_points = world_to_camera_points(points, w2c_opencv)
    z = camera_points[..., 2]
    image_points = camera_points @ K.transpose(-1, -2)
    uv = image_points[..., :2] / z.clamp_min(min_z)[..., None]
    return uv, z


def pixels_to_normalized(
    uv: Float[Tensor, "*batch 2"], width: float | Tensor, height: float | Tensor
) -> Float[Tensor, "*batch 2"]:
    """Map continuous pixel coordinates to ``grid_sample(align_corners=False)`` coordinates in [-1, 1].

    Python-number sizes are filled on ``uv``'s device: a CPU tensor moved to a GPU is a blocking copy (a host-device
    sync on every call of the render loop, issue 17).
    """
    if isinstance(width, Tensor) or isinstance(height, Tensor):
        scale = torch.stack([torch.as_tensor(width, dtype=uv.dtype), torch.as_tensor(height, dtype=uv.dtype)]).to(uv)
    else:
        scale = torch.stack([uv.new_full((), width), uv.new_full((), height)])
    return 2.0 * uv / scale - 1.0


def normalize_intrinsics(K: Float[Tensor, "*batch 3 3"], width: float, height: float) -> Float[Tensor, "*batch 3 3"]:
    """Express pixel-unit intrinsics in BTS's normalised image coordinates ([-1, 1], align_corners=False).

    ``fx' = 2 fx / W``, ``fy' = 2 fy / H``, ``cx' = 2 cx / W - 1``, ``cy' = 2 cy / H - 1``.
    """
    assert K.shape[-2:] == (3, 3), f"expected [..., 3, 3], got {tuple(K.shape)}"
    normalized = K.clone()
    normalized[..., 0, 0] = 2.0 * K[..., 0, 0] / width
    normalized[..., 1, 1] = 2.0 * K[..., 1, 1] / height
    normalized[..., 0, 2] = 2.0 * K[..., 0, 2] / width - 1.0
    normalized[..., 1, 2] = 2.0 * K[..., 1, 2] / height - 1.0
    return normalized


def intrinsics_matrix(
    fx: Float[Tensor, "*batch"], fy: Float[Tensor, "*batch"], cx: Float[Tensor, "*batch"], cy: Float[Tensor, "*batch"]
) -> Float[Tensor, "*batch 3 3"]:
    """Build ``[..., 3, 3]`` pinhole matrices from per-camera focal lengths and principal points."""
    K = torch.zeros(*fx.shape, 3, 3, dtype=fx.dtype, device=fx.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = cx
    K[..., 1, 2] = cy
    K[..., 2, 2] = 1.0
    return K


def ray_distance_to_z_depth(
    distance: Float[Tensor, "*batch 1"], directions_norm: Float[Tensor, "*batch 1"]
) -> Float[Tensor, "*batch 1"]:
    """Convert distance along a unit ray to z-depth.

    nerfstudio's ``generate_rays`` stores in ``metadata["directions_norm"]`` the length of the ray
    direction whose z-component is 1, so ``z = distance / directions_norm``.
    """
    return distance / directions_norm
