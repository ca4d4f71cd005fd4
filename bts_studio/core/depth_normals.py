"""Normal maps from depth maps, by finite differences of the back-projected points (as SRN logs them).

A depth map says where each pixel's ray ends; neighbouring end points span the surface's tangent plane.
Framework-free torch. Depth conventions: docs/conventions.md ("Depth").
"""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["normals_from_point_map", "normals_from_ray_depth", "points_from_ray_depth"]


def points_from_ray_depth(
    origins: Float[Tensor, "*batch 3"], directions: Float[Tensor, "*batch 3"], depth: Float[Tensor, "*batch 1"]
) -> Float[Tensor, "*batch 3"]:
    """End points ``o + t d`` of rays with unit directions ``d`` and ray-distance depth ``t``."""
    assert origins.shape == directions.shape and origins.shape[-1] == 3, "origins and directions must be [..., 3]"
    assert depth.shape == origins.shape[:-1] + (1,), f"depth must be [..., 1], got {tuple(depth.shape)}"
    return origins + directions * depth


def normals_from_point_map(points: Float[Tensor, "*batch H W 3"]) -> Float[Tensor, "*batch H W 3"]:
    """Unit normals of a map of surface points (any frame), facing the camera that produced the map.

    Central differences inside the image, one-sided ones on its border (replicate padding). With image
    rows pointing down and columns right, ``cross(d/drow, d/dcol)`` points back toward the camera for
    any right-handed frame (OpenCV or nerfstudio's OpenGL camera, or the world).

    Args:
        points: ``[..., H, W, 3]`` point map; H and W at least 2.

    Returns:
        ``[..., H, W, 3]`` unit normals (zero where the neighbourhood is degenerate).
    """
    assert points.ndim >= 3 and points.shape[-1] == 3, f"points must be [..., H, W, 3], got {tuple(points.shape)}"
    height, width = points.shape[-3], points.shape[-2]
    assert height >= 2 and width >= 2, f"need at least a 2x2 point map, got {height}x{width}"
    down = torch.cat([points[..., 1:, :, :], points[..., -1:, :, :]], dim=-3)
    up = torch.cat([points[..., :1, :, :], points[..., :-1, :, :]], dim=-3)
    right = torch.cat([points[..., :, 1:, :], points[..., :, -1:, :]], dim=-2)
    left = torch.cat([points[..., :, :1, :], points[..., :, :-1, :]], dim=-2)
    normals = torch.cross(down - up, right - left, dim=-1)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def normals_from_ray_depth(
    origins: Float[Tensor, "*batch H W 3"],
    directions: Float[Tensor, "*batch H W 3"],
    depth: Float[Tensor, "*batch H W 1"],
) -> Float[Tensor, "*batch H W 3"]:
    """World-frame unit normals of an image's depth map (ray distance along unit ``directions``)."""
    return normals_from_point_map(points_from_ray_depth(origins, directions, depth))
