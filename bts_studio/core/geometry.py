"""Camera geometry: axis conventions, pose inversion, projection and pixel normalisation.

Vocabulary used in this file (see docs/conventions.md for the conventions themselves):
    c2w: camera-to-world pose ``[..., 3, 4]`` or ``[..., 4, 4]``; w2c its inverse.
    K: pinhole intrinsics ``[..., 3, 3]`` in nerfstudio pixel units (pixel (0, 0) covers [0, 1]^2).
    uv: continuous pixel coordinates (u = column axis, v = row axis) in the same units.
    z: z-depth along the OpenCV optical axis (+z forward).

Everything here is framework-free torch and differentiable.
"""

from typing import Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "OPENCV_TO_OPENGL",
    "intrinsics_matrix",
    "invert_pose",
    "normalize_intrinsics",
    "opencv_to_opengl",
    "pinhole_pixel_rays",
    "pinhole_rays",
    "pixels_to_normalized",
    "project_points",
    "rows_times_points",
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
    # fill_ of a view takes the Python number as a scalar argument; `bottom[..., 0, 3] = 1.0` would first wrap it in
    # a CPU tensor (aten::lift_fresh) and copy that to the pose's device (issue 17: a host sync per render).
    bottom[..., 0, 3].fill_(1.0)
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
    return rows_times_points(w2c[..., :3, :3], points, w2c[..., None, :3, 3])


def rows_times_points(
    matrix: Float[Tensor, "*#batch rows 3"],
    points: Float[Tensor, "*#batch N 3"],
    offset: Optional[Float[Tensor, "*#batch #N rows"]] = None,
) -> Float[Tensor, "*#batch N rows"]:
    """``points @ matrix^T (+ offset)`` as three elementwise multiply-adds, not a matmul.

    A matmul with an inner size of 3 is a poor GEMM (cuBLAS: ~0.5 ms per 4 M points on an H200, 20x its memory
    time; issue 17) and follows ``torch.backends.cuda.matmul.allow_tf32``: with TF32 on, a point 50 m away would be
    projected with ~5 cm of error. Elementwise products keep fp32 whatever the flags.
    """
    columns = matrix[..., None, :, :]  # [..., 1, rows, 3]: column c of the matrix broadcasts over the points
    first = points[..., 0:1] * columns[..., 0]
    result = first if offset is None else first + offset
    result = torch.addcmul(result, points[..., 1:2], columns[..., 1])
    return torch.addcmul(result, points[..., 2:3], columns[..., 2])


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
    uv = rows_times_points(K[..., :2, :], camera_points) / z.clamp_min(min_z)[..., None]
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


NORM_EPS = 4.0 * 2.0**-52
"""Floor of a direction's norm in :func:`pinhole_rays`: nerfstudio's ``camera_utils._EPS`` (4 float64 epsilons)."""


def pinhole_rays(
    c2w: Float[Tensor, "3 4"],
    fx: Float[Tensor, ""],
    fy: Float[Tensor, ""],
    cx: Float[Tensor, ""],
    cy: Float[Tensor, ""],
    height: int,
    width: int,
) -> Tuple[Float[Tensor, "H W 3"], Float[Tensor, "H W 3"], Float[Tensor, "H W 1"]]:
    """Rays through the pixel centres of one undistorted pinhole camera, on ``c2w``'s device.

    Args:
        c2w: camera-to-world ``[3, 4]`` with nerfstudio's OpenGL axes (``Cameras.camera_to_worlds``).
        fx, fy, cx, cy: 0-dim pixel intrinsics (nerfstudio pixel units: pixel (0, 0) covers [0, 1]^2).
        height, width: image size in pixels, Python ints (the output shape is known on the host).

    Returns:
        ``origins [H, W, 3]`` (the camera centre, expanded), unit ``directions [H, W, 3]`` and
        ``directions_norm [H, W, 1]``: the length of the camera-frame direction ``(x, -y, -1)`` before normalising,
        which nerfstudio stores in ``metadata["directions_norm"]`` and :func:`ray_distance_to_z_depth` divides by.

    The arithmetic is nerfstudio 1.1.5's ``Cameras._generate_rays_from_coords`` for a perspective camera without
    distortion, op for op, so the rays are bit-identical to ``Cameras.generate_rays`` (tests/methods/test_common.py).
    What it leaves out is the generality that costs host syncs on a GPU (issue 17): image sizes read with
    ``.item()``, the pixel grid built on the CPU and copied over, per-camera-type masks (``nonzero``) and
    ``assert torch.all(...)`` on tensors. Raises ``AssertionError`` on wrong shapes.
    """
    assert c2w.shape == (3, 4), f"c2w must be [3, 4], got {tuple(c2w.shape)}"
    for name, value in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy)):
        assert value.dim() == 0, f"{name} must be a 0-dim tensor, got {tuple(value.shape)}"
    assert height > 0 and width > 0, f"image size must be positive, got {height}x{width}"
    # nerfstudio's Cameras.get_image_coords: an integer grid plus the 0.5 pixel-centre offset (exact in floats).
    y, x = torch.meshgrid(
        torch.arange(height, device=c2w.device, dtype=c2w.dtype) + 0.5,
        torch.arange(width, device=c2w.device, dtype=c2w.dtype) + 0.5,
        indexing="ij",
    )
    directions, norm = _world_directions((x - cx) / fx, (y - cy) / fy, c2w[:, :3])
    return c2w[:, 3].expand(height, width, 3), directions, norm


def _world_directions(
    u: Float[Tensor, "..."], v: Float[Tensor, "..."], rotation: Float[Tensor, "... 3 3"]
) -> Tuple[Float[Tensor, "... 3"], Float[Tensor, "... 1"]]:
    """Unit world directions and their norms before normalising of OpenCV pixel rays ``(u, v, 1)`` (``u = (x - cx)
    / fx``, ``v = (y - cy) / fy``): nerfstudio's y negation and z = -1 of OpenGL, then the rotation, in its order.
    ``u``, ``v`` and ``rotation``'s leading dimensions broadcast."""
    directions = torch.stack([u, -v, torch.full_like(u, -1.0)], dim=-1)
    # Elementwise product and sum (not a matmul) as nerfstudio rotates, so the rounding is the same.
    directions = torch.sum(directions[..., None, :] * rotation, dim=-1)
    norm = torch.linalg.vector_norm(directions, dim=-1, keepdim=True).clamp_min(NORM_EPS)
    return directions / norm, norm


def pinhole_pixel_rays(
    c2w: Float[Tensor, "N 3 4"],
    fx: Float[Tensor, " N"],
    fy: Float[Tensor, " N"],
    cx: Float[Tensor, " N"],
    cy: Float[Tensor, " N"],
    x: Float[Tensor, " N"],
    y: Float[Tensor, " N"],
) -> Tuple[Float[Tensor, "N 3"], Float[Tensor, "N 3"], Float[Tensor, "N 1"], Float[Tensor, "N 1"]]:
    """Rays through ``N`` pixel positions, each of its own undistorted pinhole camera (a batch of random pixels).

    Args:
        c2w: camera-to-world ``[N, 3, 4]`` per ray, nerfstudio's OpenGL axes (``Cameras.camera_to_worlds``).
        fx, fy, cx, cy: pixel intrinsics per ray (nerfstudio pixel units).
        x, y: pixel positions (column, row) in those units; a pixel's centre is ``(col + 0.5, row + 0.5)``.

    Returns:
        ``origins [N, 3]``, unit ``directions [N, 3]``, ``directions_norm [N, 1]`` (as :func:`pinhole_rays`) and
        ``pixel_area [N, 1]``: nerfstudio's footprint of the pixel, the product of the distances from the unit
        direction to those of the positions one pixel right and one pixel down.

    nerfstudio 1.1.5's ``Cameras.generate_rays(camera_indices, coords)`` (what its ``RayGenerator`` calls) for
    perspective cameras without distortion, op for op, so all four are bit-identical to it
    (tests/methods/test_common.py); without its host syncs (camera types read with ``.item()``, boolean-mask
    assignments, a tensor made from a Python constant per call: issue 13).
    """
    assert c2w.dim() == 3 and c2w.shape[1:] == (3, 4), f"c2w must be [N, 3, 4], got {tuple(c2w.shape)}"
    count = c2w.shape[0]
    for name, value in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy), ("x", x), ("y", y)):
        assert value.shape == (count,), f"{name} must be [{count}], got {tuple(value.shape)}"
    rotation = c2w[:, :, :3]
    u, v = (x - cx) / fx, (y - cy) / fy
    directions, norm = _world_directions(u, v, rotation)
    right, _ = _world_directions((x - cx + 1) / fx, v, rotation)
    down, _ = _world_directions(u, (y - cy + 1) / fy, rotation)
    dx = torch.sqrt(torch.sum((directions - right) ** 2, dim=-1))
    dy = torch.sqrt(torch.sum((directions - down) ** 2, dim=-1))
    return c2w[:, :, 3], directions, norm, (dx * dy)[:, None]


def ray_distance_to_z_depth(
    distance: Float[Tensor, "*batch 1"], directions_norm: Float[Tensor, "*batch 1"]
) -> Float[Tensor, "*batch 1"]:
    """Convert distance along a unit ray to z-depth.

    nerfstudio's ``generate_rays`` stores in ``metadata["directions_norm"]`` the length of the ray
    direction whose z-component is 1, so ``z = distance / directions_norm``.
    """
    return distance / directions_norm
