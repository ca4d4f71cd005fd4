"""Sample distances along rays the way Behind the Scenes does: stratified, linear in disparity.

BTS (``models/common/render/nerf.py::sample_coarse`` with ``lindisp: true``) splits ``[0, 1]`` into
``S`` equal bins, draws one uniform offset per sample inside its bin, ``s_k = (k + u_k) / S``, and maps it to
``t_k = 1 / ((1 - s_k) / near + s_k / far)``. Distances are along the unit ray direction
(docs/conventions.md, "Depth"). Each sample is a point, not an interval: compositing uses
``delta_k = t_{k+1} - t_k`` (``core.compositing.sample_deltas``).
"""

from typing import Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["bin_offsets", "disparity_linear_distances", "disparity_linear_samples"]


def bin_offsets(
    num_rays: int,
    num_samples: int,
    stratified: bool,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: Optional[torch.Generator] = None,
) -> Float[Tensor, "num_rays num_samples"]:
    """Positions ``s_k = (k + u_k) / S`` in ``[0, 1]``: ``u ~ U(0, 1)`` when stratified, else the bin centre 0.5."""
    assert num_rays >= 0 and num_samples >= 1, f"bad sizes: rays {num_rays}, samples {num_samples}"
    starts = torch.arange(num_samples, device=device, dtype=dtype).expand(num_rays, num_samples)
    if stratified:
        jitter = torch.rand(num_rays, num_samples, device=device, dtype=dtype, generator=generator)
    else:
        jitter = torch.full((num_rays, num_samples), 0.5, device=device, dtype=dtype)
    return (starts + jitter) / num_samples


def disparity_linear_distances(
    offsets: Float[Tensor, "*batch num_samples"], near: float, far: float
) -> Float[Tensor, "*batch num_samples"]:
    """Map offsets ``s`` in ``[0, 1]`` to distances linear in disparity: ``t = 1 / ((1 - s) / near + s / far)``.

    Args:
        offsets: bin positions from :func:`bin_offsets`.
        near: distance at ``s = 0`` (metres for KITTI-360; BTS uses 3).
        far: distance at ``s = 1`` (BTS uses 80).

    Returns:
        Increasing distances in ``[near, far]``.
    """
    assert 0.0 < near < far, f"need 0 < near < far, got near={near}, far={far}"
    return 1.0 / ((1.0 - offsets) / near + offsets / far)


def disparity_linear_offsets(
    distances: Float[Tensor, "*batch num_samples"], near: float, far: float
) -> Float[Tensor, "*batch num_samples"]:
    """The inverse of :func:`disparity_linear_distances`: ``s = (1 / near - 1 / t) / (1 / near - 1 / far)``, 0 at
    ``near`` and 1 at ``far``. This is mip-NeRF 360's normalised ray distance for the map ``g(t) = 1 / t`` (Barron
    et al. 2022, eq. 11), the space in which its distortion loss is measured.

    Args:
        distances: distances along the ray, in ``near``'s and ``far``'s unit.
        near: distance at ``s = 0``.
        far: distance at ``s = 1``.
    """
    assert 0.0 < near < far, f"need 0 < near < far, got near={near}, far={far}"
    return (1.0 / near - 1.0 / distances) / (1.0 / near - 1.0 / far)


def disparity_linear_samples(
    num_rays: int,
    num_samples: int,
    near: float,
    far: float,
    stratified: bool,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Float[Tensor, "num_rays num_samples"], Float[Tensor, "num_rays num_samples"]]:
    """BTS's coarse samples: bin positions ``s`` in ``[0, 1]`` and their distances ``t``, linear in disparity
    between near and far (stratified: one uniform draw per bin)."""
    offsets = bin_offsets(num_rays, num_samples, stratified, device=device, dtype=dtype, generator=generator)
    return offsets, disparity_linear_distances(offsets, near, far)
