"""Multiresolution iso-surface extraction (MISE; Mescheder et al., Occupancy Networks, CVPR 2019, Sec. 3.3).

A value grid over a box, evaluated densely only near the surface: a coarse ``(r0 + 1)^3`` grid is evaluated
everywhere; then, ``upsampling_steps`` times, the grid is doubled and only the corners of *active* cells (cells
whose corners do not all lie on one side of the threshold, grown by one cell so that thin parts the coarse
grid skipped between two corners are still caught nearby) are evaluated exactly; every other point takes
the trilinear upsampling of the coarser level, which is on the right side of the threshold there. DVR:
``resolution_0`` 32, ``upsampling_steps`` 3 (256^3), threshold 0.5 in probability (logit 0).

The official ``libmise`` refines voxels one point at a time in Cython; this is a whole-grid torch version of
the same idea (docs/dvr.md lists the difference). Framework-free torch.
"""

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

__all__ = ["GridFunction", "grid_points", "mise_grid"]

GridFunction = Callable[[Float[Tensor, "P 3"]], Float[Tensor, " P"]]
"""Values (e.g. occupancy logits) at points ``[P, 3]``."""


def grid_points(resolution: int, half_extent: float, device=None, dtype=torch.float32) -> Float[Tensor, "R R R 3"]:
    """Corner points of a ``resolution^3``-cell grid over ``[-half_extent, half_extent]^3`` (``R = resolution + 1``)."""
    axis = torch.linspace(-half_extent, half_extent, resolution + 1, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def _active_points(values: Tensor, threshold: float) -> Tensor:
    """Grid points that are corners of cells straddling ``threshold``, grown by one cell. Bool ``[R, R, R]``."""
    inside = (values >= threshold).float()[None, None]
    # A cell is mixed iff the max and min of its 8 corners differ.
    high = F.max_pool3d(inside, kernel_size=2, stride=1)
    low = -F.max_pool3d(-inside, kernel_size=2, stride=1)
    mixed = (high != low).float()
    grown = F.max_pool3d(mixed, kernel_size=3, stride=1, padding=1)  # neighbouring cells too
    corners = F.max_pool3d(F.pad(grown, (1, 1, 1, 1, 1, 1)), kernel_size=2, stride=1)  # points of those cells
    return corners[0, 0] > 0


def mise_grid(
    function: GridFunction,
    half_extent: float = 0.5,
    resolution_0: int = 32,
    upsampling_steps: int = 3,
    threshold: float = 0.0,
    batch_points: int = 1 << 18,
    device: Optional[torch.device] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Float[Tensor, "R R R"]:
    """Values on a ``(resolution_0 2^steps + 1)^3`` grid over the cube, exact near the ``threshold`` surface.

    Args:
        function: values at points (evaluated in batches of ``batch_points``, without gradients).
        half_extent: the grid spans ``[-half_extent, half_extent]^3`` (DVR: 0.5, padding 0).
        resolution_0: cells per side of the coarse grid (DVR: 32).
        upsampling_steps: doublings (DVR: 3, so 256 cells per side).
        threshold: iso-level of the surface, in the function's units (DVR: logit(0.5) = 0).
        progress: called with ``(level, points evaluated at that level)`` after each level.

    Returns:
        ``[R, R, R]`` float32 values, indexed ``[x, y, z]`` as :func:`grid_points`.
    """

    def evaluate(points: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat(
                [function(points[s : s + batch_points]).float() for s in range(0, len(points), batch_points)]
            )

    resolution = resolution_0
    values = evaluate(grid_points(resolution, half_extent, device).reshape(-1, 3)).reshape((resolution + 1,) * 3)
    if progress is not None:
        progress(0, values.numel())
    for level in range(1, upsampling_steps + 1):
        resolution *= 2
        coarse_active = _active_points(values, threshold)
        values = F.interpolate(values[None, None], size=(resolution + 1,) * 3, mode="trilinear", align_corners=True)[
            0, 0
        ]
        active = F.interpolate(coarse_active[None, None].float(), size=(resolution + 1,) * 3, mode="nearest")[0, 0] > 0
        active = F.max_pool3d(active[None, None].float(), kernel_size=3, stride=1, padding=1)[0, 0] > 0
        index = active.nonzero()
        if len(index):
            axis_step = 2 * half_extent / resolution
            points = index.to(torch.float32) * axis_step - half_extent
            values[index[:, 0], index[:, 1], index[:, 2]] = evaluate(points.to(values.device))
        if progress is not None:
            progress(level, len(index))
    return values
