"""Voxel-grid geometry: voxel centres, lifting image features into a grid, and resampling a grid into a camera frustum.

DeepVoxels (Sitzmann et al., CVPR 2019; ``projection.py`` of the official code) moves features between a
persistent cubic grid and 2D views in two directions:

- *lifting*: every voxel centre is projected into a view's feature map and reads its feature bilinearly
  (:func:`lift_features`);
- *projection*: a canonical view frustum of ``h x w`` pixels times ``P`` depth planes is filled by trilinear
  lookups into the grid (:func:`frustum_points` then :func:`sample_grid`);
- *occlusion*: per-pixel scores over the depth planes become visibility weights by a softmax over depth
  (:func:`visibility_weights`), giving a depth map (:func:`expected_depth`) and collapsed 2D features
  (:func:`collapse_depth`).

Grid layout, used by every function here: a grid is ``[B, C, G, G, G]`` with index order ``(z, y, x)``, the order of
``torch.nn.functional.grid_sample``'s ``(D, H, W)``, so voxel ``[..., k, j, i]`` has its centre at world point
``barycentre + (i - (G - 1) / 2, j - (G - 1) / 2, k - (G - 1) / 2) * voxel_size``: the grid spans ``G *
voxel_size`` and is centred on the barycentre. Cameras follow docs/conventions.md: OpenCV axes, intrinsics ``K``
in nerfstudio pixel units of the map being read or written (pixel ``(0, 0)`` covers ``[0, 1]^2``).

Everything is framework-free torch and differentiable with respect to the features (not the cameras).
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from bts_studio.core.feature_sampling import MIN_Z, outside_frustum
from bts_studio.core.geometry import pixels_to_normalized, project_points, world_to_camera_points

__all__ = [
    "collapse_depth",
    "expected_depth",
    "frustum_depths",
    "frustum_points",
    "grid_coordinates",
    "lift_features",
    "ray_distance_scale",
    "sample_grid",
    "visibility_weights",
    "voxel_centres",
]


def voxel_centres(grid_dim: int, voxel_size: float, barycentre: Float[Tensor, "3"]) -> Float[Tensor, "G G G 3"]:  # noqa: F821
    """World coordinates ``(x, y, z)`` of every voxel centre, indexed ``[k, j, i]`` = ``(z, y, x)``.

    Raises:
        ValueError: for a non-positive ``grid_dim`` or ``voxel_size``.
    """
    if grid_dim < 1 or voxel_size <= 0:
        raise ValueError(f"need grid_dim >= 1 and voxel_size > 0, got {grid_dim} and {voxel_size}")
    assert barycentre.shape == (3,), f"barycentre must be [3], got {tuple(barycentre.shape)}"
    offsets = (torch.arange(grid_dim, dtype=barycentre.dtype, device=barycentre.device) - (grid_dim - 1) / 2.0) * (
        voxel_size
    )
    z, y, x = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    return torch.stack([x, y, z], dim=-1) + barycentre


def grid_coordinates(
    grid_dim: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> Float[Tensor, "3 G G G"]:  # noqa: F821
    """DeepVoxels' coord-conv channels: normalised voxel coordinates ``(x, y, z)`` = ``index / G - 0.5`` in
    ``[-0.5, 0.5)``, laid out ``[3, G, G, G]`` with the grid's ``(z, y, x)`` index order (``deep_voxels.py``)."""
    steps = torch.arange(grid_dim, dtype=dtype, device=device) / grid_dim - 0.5
    z, y, x = torch.meshgrid(steps, steps, steps, indexing="ij")
    return torch.stack([x, y, z], dim=0)


def lift_features(
    feature_map: Float[Tensor, "B C h w"],
    K: Float[Tensor, "B 3 3"],
    w2c_opencv: Float[Tensor, "B 3 4"],
    centres: Float[Tensor, "G G G 3"],  # noqa: F821
) -> Tuple[Float[Tensor, "B C G G G"], Bool[Tensor, "B G G G"]]:  # noqa: F821
    """Lift a 2D feature map into the grid: each voxel centre reads the bilinear feature where it projects.

    Voxels behind the camera or projecting outside the map get zeros (``comp_lifting_idcs`` leaves them empty).

    Args:
        feature_map: the source view's features.
        K: intrinsics of the feature map (pixel units of ``h x w``).
        w2c_opencv: the source view's world-to-camera pose.
        centres: voxel centres from :func:`voxel_centres`.

    Returns:
        The observation volume and the mask of voxels that saw the image.
    """
    b, c, h, w = feature_map.shape
    g = centres.shape[0]
    assert centres.shape == (g, g, g, 3), f"centres must be [G, G, G, 3], got {tuple(centres.shape)}"
    assert K.shape == (b, 3, 3) and w2c_opencv.shape == (b, 3, 4), f"K {tuple(K.shape)}, w2c {tuple(w2c_opencv.shape)}"
    points = centres.reshape(1, -1, 3).to(feature_map).expand(b, -1, -1)
    uv, z = project_points(points, K.to(feature_map), w2c_opencv.to(feature_map), min_z=MIN_Z)
    xy = pixels_to_normalized(uv, w, h)
    valid = ~outside_frustum(xy, z)
    sampled = F.grid_sample(feature_map, xy[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)
    volume = sampled[:, :, 0] * valid[:, None].to(feature_map)
    return volume.reshape(b, c, g, g, g), valid.reshape(b, g, g, g)


def frustum_depths(near_plane: float, spacing: float, num_planes: int) -> Float[Tensor, " P"]:
    """Camera z-depths of the frustum's depth planes: ``near_plane + k * spacing`` for ``k < num_planes``
    (DeepVoxels spaces them one voxel apart, starting at the scene's near plane)."""
    if near_plane <= 0 or spacing <= 0 or num_planes < 1:
        raise ValueError(
            f"need near_plane > 0, spacing > 0, num_planes >= 1; got {near_plane}, {spacing}, {num_planes}"
        )
    return near_plane + spacing * torch.arange(num_planes, dtype=torch.float32)


def frustum_points(
    K: Float[Tensor, "B 3 3"],
    c2w_opencv: Float[Tensor, "B 3 4"],
    depths: Float[Tensor, " P"],
    height: int,
    width: int,
) -> Float[Tensor, "B P h w 3"]:
    """World points of a camera's canonical frustum: every pixel centre of an ``h x w`` map at every z-depth plane.

    ``K`` is in pixel units of that map; point ``[b, k, r, c]`` lies on the ray of pixel centre ``(c + 0.5, r + 0.5)``
    at camera z-depth ``depths[k]``.
    """
    b = K.shape[0]
    assert K.shape == (b, 3, 3) and c2w_opencv.shape == (b, 3, 4), f"K {tuple(K.shape)}, c2w {tuple(c2w_opencv.shape)}"
    assert depths.ndim == 1, f"depths must be [P], got {tuple(depths.shape)}"
    rows = torch.arange(height, dtype=K.dtype, device=K.device) + 0.5
    cols = torch.arange(width, dtype=K.dtype, device=K.device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(1, -1, 3)  # [1, hw, 3]
    rays = pixels @ torch.linalg.inv(K).transpose(-1, -2)  # camera-frame directions with z = 1, [B, hw, 3]
    camera_points = depths.to(K)[None, :, None, None] * rays[:, None]  # [B, P, hw, 3]
    world = world_to_camera_points(camera_points.reshape(b, -1, 3), c2w_opencv)  # applies c2w: camera -> world
    return world.reshape(b, depths.shape[0], height, width, 3)


def sample_grid(
    grid: Float[Tensor, "B C G G G"],  # noqa: F821
    points: Float[Tensor, "B *spatial 3"],
    barycentre: Float[Tensor, "3"],
    voxel_size: float,
) -> Float[Tensor, "B C *spatial"]:
    """Trilinear lookup of the grid at world points; beyond the outer voxel centres values fade linearly to zero
    within one voxel spacing (zero padding), and are zero farther out.

    Raises:
        ValueError: for a grid that is not cubic.
    """
    b, c, g = grid.shape[:3]
    if grid.shape[2:] != (g, g, g):
        raise ValueError(f"grid must be cubic [B, C, G, G, G], got {tuple(grid.shape)}")
    assert points.shape[0] == b and points.shape[-1] == 3, f"points must be [B, ..., 3], got {tuple(points.shape)}"
    spatial = points.shape[1:-1]
    # align_corners=True: -1 and +1 are the centres of the first and last voxels.
    half_extent = voxel_size * (g - 1) / 2.0 if g > 1 else voxel_size
    normalised = (points - barycentre.to(points)) / half_extent
    sampled = F.grid_sample(
        grid, normalised.reshape(b, 1, 1, -1, 3).to(grid), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return sampled.reshape(b, c, *spatial)


def visibility_weights(scores: Float[Tensor, "B 1 P h w"]) -> Float[Tensor, "B 1 P h w"]:
    """DeepVoxels' occlusion weights: a softmax of the occlusion network's scores over the depth planes (dim 2),
    so the weights of every pixel's ray are positive and sum to one."""
    assert scores.dim() == 5 and scores.shape[1] == 1, f"scores must be [B, 1, P, h, w], got {tuple(scores.shape)}"
    return torch.softmax(scores, dim=2)


def expected_depth(weights: Float[Tensor, "B 1 P h w"], depths: Float[Tensor, " P"]) -> Float[Tensor, "B 1 h w"]:
    """Depth map ``sum_k w_k depth_k`` (camera z-depth, the units of ``depths``)."""
    assert weights.dim() == 5 and weights.shape[2] == depths.shape[0], f"{tuple(weights.shape)} vs {depths.shape}"
    return (weights * depths.to(weights)[None, None, :, None, None]).sum(dim=2)


def collapse_depth(
    features: Float[Tensor, "B C P h w"], weights: Float[Tensor, "B 1 P h w"]
) -> Float[Tensor, "B C h w"]:
    """Visibility-weighted features collapsed along depth: ``mean_k(w_k f_k)`` as the official ``OcclusionNet``
    returns them (a mean, i.e. the weighted sum divided by ``P``)."""
    assert features.dim() == 5 and weights.shape[2:] == features.shape[2:], f"{features.shape} vs {weights.shape}"
    return (features * weights).mean(dim=2)


def ray_distance_scale(K: Float[Tensor, "B 3 3"], height: int, width: int) -> Float[Tensor, "B h w"]:
    """Length of each pixel's camera ray with z = 1; ray distance = z-depth times this (docs/conventions.md)."""
    rows = torch.arange(height, dtype=K.dtype, device=K.device) + 0.5
    cols = torch.arange(width, dtype=K.dtype, device=K.device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(1, -1, 3)
    rays = pixels @ torch.linalg.inv(K).transpose(-1, -2)
    return rays.norm(dim=-1).reshape(K.shape[0], height, width)
