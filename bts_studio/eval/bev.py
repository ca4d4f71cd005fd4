"""Bird's-eye occupancy views ("profiles") of a density field, as BTS draws them (``scripts/inference_setup.py``).

A BEV pixel covers one (x, z) column of the tilted, road-parallel frame (see ``bts_studio.eval.occupancy``). The
column is sampled at ``Y`` heights from the camera downwards; densities of points the image cannot see are set to
1; the densities are summed from the top down, and the pixel's value is the share of heights whose running sum
is still at most ``threshold`` (8 in BTS). 1 means the column is free all the way down, 0 that it is blocked at
camera height. BTS's figure uses x -9..9 m, z 21..3 m, y 0..0.75 m below the camera, 256 x 256 x 64 samples.
"""

from typing import Tuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from bts_studio.eval.occupancy import CAMERA_TILT_DEG, box_grid, tilted_to_camera

BTS_PROFILE_THRESHOLD = 8.0
"""Running density sum up to which a height level still counts as free."""

OUT_OF_FRUSTUM_DENSITY = 1.0
"""Density BTS assigns to points outside the image before summing."""


def bev_query_points(
    x_range: Tuple[float, float],
    z_range: Tuple[float, float],
    y_range: Tuple[float, float],
    resolution: Tuple[int, int, int],
    tilt_deg: float = CAMERA_TILT_DEG,
) -> Float[Tensor, "Y Z X 3"]:
    """Camera-frame (OpenCV) sample points of a BEV image.

    Args:
        x_range: lateral extent, left to right image columns (metres).
        z_range: forward extent, top to bottom image rows (BTS puts the far end on top: ``(far, near)``).
        y_range: heights below the camera in the tilted frame (y down), first level summed first.
        resolution: ``(x_res, z_res, y_res)`` sample counts (inclusive linspace on every axis).
        tilt_deg: camera pitch below the horizon; the grid is laid out parallel to the road.

    Returns:
        Points ``[y_res, z_res, x_res, 3]`` in the camera frame.
    """
    x_res, z_res, y_res = resolution
    xs = torch.linspace(x_range[0], x_range[1], x_res)
    zs = torch.linspace(z_range[0], z_range[1], z_res)
    ys = torch.linspace(y_range[0], y_range[1], y_res)
    return tilted_to_camera(box_grid(xs, ys, zs), tilt_deg)


def bev_profile(
    density: Float[Tensor, "Y Z X"],
    invalid: Bool[Tensor, "Y Z X"] | None = None,
    threshold: float = BTS_PROFILE_THRESHOLD,
) -> Float[Tensor, "Z X"]:
    """Share of height levels whose top-down cumulative density is at most ``threshold``.

    Args:
        density: densities on a ``bev_query_points`` grid (level 0 is the top).
        invalid: points outside the image; their density is replaced by ``OUT_OF_FRUSTUM_DENSITY``.
        threshold: running-sum threshold (BTS: 8).

    Returns:
        ``[Z, X]`` values in ``[0, 1]``; 1 is free space through the whole column.
    """
    assert density.ndim == 3, f"expected [Y, Z, X], got {tuple(density.shape)}"
    if invalid is not None:
        assert invalid.shape == density.shape, f"invalid {tuple(invalid.shape)} != density {tuple(density.shape)}"
        density = torch.where(invalid, torch.full_like(density, OUT_OF_FRUSTUM_DENSITY), density)
    cumulative = torch.cumsum(density, dim=0)
    return (cumulative <= threshold).float().mean(dim=0)
