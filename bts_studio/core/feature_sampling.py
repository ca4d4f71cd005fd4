"""Project 3D points into posed views and read features or colours there, as Behind the Scenes does.

A *view* is a pinhole camera with intrinsics ``K`` in nerfstudio pixel units, a world-to-camera pose in OpenCV axes
and an image or feature map of size ``H x W`` (docs/conventions.md, "Pixels" and "Camera axes").
Shapes use ``B`` for batch elements (BTS frame groups), ``V`` for views per element, ``N`` for points.

BTS details kept here (``models/bts/model/models_bts.py``):
    * the perspective divide clamps z to at least ``MIN_Z``; a point is outside a view's frustum when
      ``z <= MIN_Z`` or its normalised coordinates leave ``[-1, 1]``;
    * lookups are bilinear ``grid_sample`` with ``padding_mode="border"`` and ``align_corners=False``, so points
      outside the frustum read the border value (they are flagged, not zeroed);
    * the depth code is the inverse camera z mapped linearly to ``[-1, 1]`` between near and far.
"""

from typing import Tuple

import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from bts_studio.core.geometry import pixels_to_normalized, project_points

__all__ = ["MIN_Z", "inverse_depth_code", "outside_frustum", "project_to_views", "sample_maps", "sample_view_colours"]

MIN_Z = 1e-3
"""BTS's ``EPS``: smallest z used in the perspective divide; points at or below it are invalid."""


def project_to_views(
    points: Float[Tensor, "B N 3"],
    K: Float[Tensor, "B V 3 3"],
    w2c_opencv: Float[Tensor, "B V 3 4"],
    height: int,
    width: int,
) -> Tuple[Float[Tensor, "B V N 2"], Float[Tensor, "B V N"]]:
    """Project world points into every view of their batch element.

    Returns:
        ``xy``: ``grid_sample`` coordinates (``align_corners=False``) in ``[-1, 1]`` inside the image;
        ``z``: camera z-depth (unclamped).
    """
    assert points.dim() == 3 and points.shape[-1] == 3, f"points must be [B, N, 3], got {tuple(points.shape)}"
    assert K.shape[-2:] == (3, 3) and K.dim() == 4, f"K must be [B, V, 3, 3], got {tuple(K.shape)}"
    assert w2c_opencv.shape[:2] == K.shape[:2], f"K {tuple(K.shape)} vs w2c {tuple(w2c_opencv.shape)}"
    uv, z = project_points(points[:, None], K, w2c_opencv, min_z=MIN_Z)  # [B, V, N, 2], [B, V, N]
    return pixels_to_normalized(uv, width, height), z


def outside_frustum(xy: Float[Tensor, "*batch 2"], z: Float[Tensor, "*batch"]) -> Bool[Tensor, "*batch"]:
    """True where a projected point is behind the camera (``z <= MIN_Z``) or outside the image."""
    assert xy.shape[:-1] == z.shape, f"xy {tuple(xy.shape)} vs z {tuple(z.shape)}"
    return (z <= MIN_Z) | (xy.abs() > 1.0).any(dim=-1)


def inverse_depth_code(z: Float[Tensor, "*batch"], near: float, far: float) -> Float[Tensor, "*batch"]:
    """``2 (1/z - 1/far) / (1/near - 1/far) - 1``: +1 at ``near``, -1 at ``far`` (z clamped to ``MIN_Z``)."""
    assert 0.0 < near < far, f"need 0 < near < far, got {near}, {far}"
    inverse = (1.0 / z.clamp_min(MIN_Z) - 1.0 / far) / (1.0 / near - 1.0 / far)
    return 2.0 * inverse - 1.0


def sample_maps(maps: Float[Tensor, "B V C H W"], xy: Float[Tensor, "B V N 2"]) -> Float[Tensor, "B V N C"]:
    """Bilinear lookup of per-view maps at normalised coordinates (border padding, ``align_corners=False``)."""
    assert maps.dim() == 5 and xy.dim() == 4, f"maps {tuple(maps.shape)}, xy {tuple(xy.shape)}"
    assert maps.shape[:2] == xy.shape[:2], f"maps {tuple(maps.shape)} vs xy {tuple(xy.shape)}"
    b, v, c, h, w = maps.shape
    grid = xy.reshape(b * v, 1, -1, 2).to(maps.dtype)
    sampled = F.grid_sample(
        maps.reshape(b * v, c, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled.reshape(b, v, c, -1).transpose(-1, -2)


def sample_view_colours(
    images: Float[Tensor, "B V 3 H W"],
    points: Float[Tensor, "B N 3"],
    K: Float[Tensor, "B V 3 3"],
    w2c_opencv: Float[Tensor, "B V 3 4"],
) -> Tuple[Float[Tensor, "B N V 3"], Bool[Tensor, "B N V"]]:
    """Colour of every point in every view (BTS's ``sample_colors``); no occlusion test.

    Returns:
        ``colours`` read bilinearly (border value outside the image) and ``invalid``: the point is behind the
        view's camera or outside its image.
    """
    height, width = images.shape[-2:]
    xy, z = project_to_views(points, K, w2c_opencv, height, width)
    colours = sample_maps(images, xy)  # [B, V, N, 3]
    return colours.transpose(1, 2), outside_frustum(xy, z).transpose(1, 2)
