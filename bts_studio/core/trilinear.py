"""Trilinear interpolation of a value grid over a cube, twice differentiable in the points.

The grid is the one :func:`bts_studio.core.mise.grid_points` lays out: ``values[i, j, k]`` sits at the corner point
``(x_i, y_j, z_k)`` of a regular grid over ``[-half_extent, half_extent]^3`` (index order ``(x, y, z)``, the outer
corners on the cube's faces). Lookups follow ``torch.nn.functional.grid_sample(mode="bilinear",
align_corners=True, padding_mode="border")`` on the ``(z, y, x)``-permuted volume: the same values, and points
outside the cube read the value of the nearest face (border clamping; zero gradient across it).

Why not ``grid_sample`` itself: DVR's mesh refinement (``core/mesh_refinement.py``) differentiates the field's
gradient (the normal term), i.e. needs a double backward in the points, and the PyTorch of the GPU image (2.11)
has none for ``grid_sampler_3d_backward`` ("derivative for aten::grid_sampler_3d_backward is not implemented").
Here the eight corner values are gathered and blended with products of the fractional offsets in plain torch
ops, whose derivatives of every order autograd knows. Framework-free torch.
"""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["trilinear_interpolate"]


def trilinear_interpolate(
    values: Float[Tensor, "X Y Z"],  # noqa: F821
    points: Float[Tensor, "*batch 3"],
    half_extent: float,
) -> Float[Tensor, " *batch"]:
    """Trilinear interpolation of ``values`` (a corner grid over ``[-half_extent, half_extent]^3``) at ``points``.

    Equal to ``grid_sample(values.permute(2, 1, 0)[None, None], points / half_extent, align_corners=True,
    padding_mode="border")`` up to float rounding, and differentiable (any order) in ``points`` and in ``values``.

    Args:
        values: ``[X, Y, Z]`` grid values, ``values[i, j, k]`` at ``-h + (i, j, k) * 2h / ((X, Y, Z) - 1)``
            (``h = half_extent``); at least 2 per axis.
        points: ``[..., 3]`` world points ``(x, y, z)`` in the units of ``half_extent``, any value (outside the
            cube the coordinates are clamped to it, as border padding), same dtype and device as ``values``.
        half_extent: half the cube's side (> 0).

    Returns:
        ``[...]`` interpolated values.

    Raises:
        ValueError: for a grid that is not 3-D with >= 2 points per axis, points without a trailing 3, a
            non-positive ``half_extent``, or mismatched dtypes/devices.
    """
    if values.ndim != 3 or min(values.shape) < 2:
        raise ValueError(f"values must be an [X, Y, Z] grid with >= 2 points per axis, got {tuple(values.shape)}")
    if points.shape[-1:] != (3,):
        raise ValueError(f"points must be [..., 3], got {tuple(points.shape)}")
    if half_extent <= 0:
        raise ValueError(f"half_extent must be > 0, got {half_extent}")
    if points.dtype != values.dtype or points.device != values.device:
        raise ValueError(
            f"points ({points.dtype}, {points.device}) and values ({values.dtype}, {values.device}) must match"
        )
    batch = points.shape[:-1]
    flat = points.reshape(-1, 3)  # [P, 3]
    last = torch.tensor(values.shape, dtype=points.dtype, device=points.device) - 1  # [3]
    # grid_sample's align_corners=True unnormalisation, then border padding: clamp into [0, size - 1].
    index = ((flat / half_extent + 1) / 2 * last).clamp(min=torch.zeros_like(last), max=last)  # [P, 3]
    # The lower corner of the cell; a point on the last plane uses the last cell with fraction 1.
    lower = torch.minimum(index.detach().floor(), last - 1)  # [P, 3]
    fraction = index - lower  # [P, 3], in [0, 1], differentiable in the points
    i, j, k = lower.long().unbind(dim=-1)  # [P] each
    fx, fy, fz = fraction.unbind(dim=-1)  # [P] each
    result = flat.new_zeros(flat.shape[0])
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dz, wz in ((0, 1 - fz), (1, fz)):
                result = result + wx * wy * wz * values[i + dx, j + dy, k + dz]
    return result.reshape(batch)
