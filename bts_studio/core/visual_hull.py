"""Visual hull occupancy: a point is occupied when every view that sees it projects it onto the object mask.

Used for DVR's baselines (the visual hull of a multi-view capture; the mean shape of a class built from its
objects' visual hulls) and as a geometric check of parsed cameras. Framework-free torch.
"""

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from bts_studio.core.geometry import project_points

__all__ = ["visual_hull_occupancy"]


def visual_hull_occupancy(
    points: Float[Tensor, "P 3"],
    K: Float[Tensor, "V 3 3"],
    w2c_opencv: Float[Tensor, "V 3 4"],
    masks: Bool[Tensor, "V H W"],
    batch_points: int = 1 << 18,
) -> Bool[Tensor, " P"]:
    """Occupancy of world points carved by object masks (views where a point falls outside the image or
    behind the camera do not carve it). ``K`` in nerfstudio pixels: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``."""
    assert K.shape[0] == w2c_opencv.shape[0] == masks.shape[0], "one K, pose and mask per view"
    num_views, height, width = masks.shape
    result = torch.empty(points.shape[0], dtype=torch.bool, device=points.device)
    for start in range(0, points.shape[0], batch_points):
        chunk = points[start : start + batch_points]
        uv, z = project_points(chunk.expand(num_views, -1, -1), K, w2c_opencv)  # [V, P, 2], [V, P]
        cols, rows = uv[..., 0].floor().long(), uv[..., 1].floor().long()
        seen = (z > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        views = torch.arange(num_views, device=points.device)[:, None].expand_as(cols)
        on_mask = masks[views, rows.clamp(0, height - 1), cols.clamp(0, width - 1)]
        result[start : start + batch_points] = (on_mask | ~seen).all(dim=0)
    return result
