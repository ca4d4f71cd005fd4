"""DVR's training losses (official ``im2mesh/dvr/training.py`` and ``im2mesh/losses.py``; classics.md C.3).

Every loss is a *sum* over pixels (and channels) divided by the number of images in the batch, as DVR's
``reduction_method='sum'`` followed by ``/ batch_size``: magnitudes grow with the pixels drawn per image.
Framework-free torch; masks select the rays each term applies to.
"""

from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor


def rgb_l1_loss(
    rgb: Float[Tensor, "N 3"], target: Float[Tensor, "N 3"], valid: Bool[Tensor, " N"], num_images: int
) -> Tensor:
    """L1 summed over channels on ``valid`` rays (predicted surface AND object mask), per image."""
    assert rgb.shape == target.shape and valid.shape == rgb.shape[:1], "rgb/target [N, 3], valid [N]"
    return ((rgb - target).abs().sum(dim=-1) * valid).sum() / num_images


def depth_l1_loss(
    depth: Float[Tensor, " N"], target: Float[Tensor, " N"], valid: Bool[Tensor, " N"], num_images: int
) -> Tensor:
    """L1 of camera z-depth on ``valid`` rays (surface AND mask AND finite target), per image."""
    assert depth.shape == target.shape == valid.shape, "depth, target and valid must all be [N]"
    difference = torch.where(valid, depth - torch.where(valid, target, depth.detach()), torch.zeros_like(depth))
    return difference.abs().sum() / num_images


def occupancy_bce_loss(
    logits: Float[Tensor, " N"], occupied: bool, valid: Bool[Tensor, " N"], num_images: int
) -> Tensor:
    """BCE of occupancy logits against 1 (``occupied``, the occupancy loss) or 0 (the freespace loss)."""
    target = torch.full_like(logits, 1.0 if occupied else 0.0)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid).sum() / num_images


def finite_difference_normals(
    logits_fn: Callable[[Float[Tensor, "P 3"]], Float[Tensor, " P"]], points: Float[Tensor, "P 3"], step: float = 1e-3
) -> Float[Tensor, "P 3"]:
    """Unit normals ``-grad f / |grad f|`` (outward for logits positive inside) by central differences.

    DVR's ``get_normals`` differentiates the occupancy with central differences of ``step`` 1e-3.
    """
    offsets = torch.eye(3, device=points.device, dtype=points.dtype) * step
    probes = torch.cat([points[:, None] + offsets, points[:, None] - offsets], dim=1)  # [P, 6, 3]
    values = logits_fn(probes.reshape(-1, 3)).reshape(-1, 6)
    gradient = (values[:, :3] - values[:, 3:]) / (2 * step)
    return -gradient / gradient.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def normal_smoothness_loss(
    normals: Float[Tensor, "P 3"], jittered_normals: Float[Tensor, "P 3"], num_images: int
) -> Tensor:
    """``sum ||n(p) - n(p + eps)||_2`` per image (DVR: eps ~ U(-5e-4, 5e-4)^3 around surface points)."""
    assert normals.shape == jittered_normals.shape, "one jittered normal per normal"
    return (normals - jittered_normals).norm(dim=-1).sum() / num_images
