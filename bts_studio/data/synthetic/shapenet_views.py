"""Camera viewpoints of the ShapeNet renderings: random views on the sphere and SRN's Archimedean spiral.

All poses are camera-to-world in OpenCV axes (x right, y down, +z forward; docs/conventions.md), looking
at the origin of a z-up world, as written to SRN ``pose/*.txt`` files.
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor

WORLD_UP = (0.0, 0.0, 1.0)
"""The renderings' world is z-up, as pixelNeRF treats the released SRN data (classics.md A.3)."""


def look_at_opencv(
    eyes: Float[Tensor, "N 3"], target: Float[Tensor, "3"], up: Float[Tensor, "3"]
) -> Float[Tensor, "N 4 4"]:
    """Camera-to-world poses (OpenCV axes) of cameras at ``eyes`` looking at ``target``, image-up along ``up``.

    A camera whose viewing direction is (anti)parallel to ``up`` has no defined roll; it then takes the
    world y axis as its image-up, so every pose stays a proper rotation.
    """
    assert eyes.ndim == 2 and eyes.shape[-1] == 3, f"eyes must be [N, 3], got {tuple(eyes.shape)}"
    forward = target.to(eyes) - eyes
    forward = forward / forward.norm(dim=-1, keepdim=True)
    up = up.to(eyes).expand_as(forward)
    degenerate = torch.cross(forward, up, dim=-1).norm(dim=-1) < 1e-6
    fallback = eyes.new_tensor([0.0, 1.0, 0.0]).expand_as(forward)
    up = torch.where(degenerate[:, None], fallback, up)
    right = torch.cross(forward, up, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.cross(forward, right, dim=-1)
    c2w = torch.zeros(eyes.shape[0], 4, 4, dtype=eyes.dtype)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = down
    c2w[:, :3, 2] = forward
    c2w[:, :3, 3] = eyes
    c2w[:, 3, 3] = 1.0
    return c2w


def sphere_positions(count: int, radius: float, generator: torch.Generator) -> Float[Tensor, "count 3"]:
    """Uniform random positions on the full sphere (normalised Gaussians, as SRN's ``sample_spherical``)."""
    xyz = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    return radius * xyz / xyz.norm(dim=-1, keepdim=True)


def archimedean_spiral_positions(count: int, radius: float) -> Float[Tensor, "count 3"]:
    """``count`` positions on SRN's spherical Archimedean spiral, from the equator up to the top pole.

    SRN's renderer runs its parameter ``i`` from ``a/2`` to ``a`` (``a = 40``) in 250 steps and, through
    floating-point accumulation, ends with 251 poses. Here the parameter takes exactly ``count`` values
    including both ends, so ``count=251`` reproduces the released spiral (polar angle ``theta = i/a*pi``,
    azimuth ``-i``), expressed in this z-up world.
    """
    assert count >= 1, "a spiral needs at least one view"
    a = 40.0
    steps = torch.linspace(a / 2, a, count, dtype=torch.float64) if count > 1 else torch.tensor([a / 2.0])
    theta = steps / a * math.pi
    x = radius * torch.sin(theta) * torch.cos(-steps)
    y = radius * torch.sin(theta) * torch.sin(-steps)
    z = -radius * torch.cos(theta)
    return torch.stack([x, y, z], dim=-1)


def orbit_poses(positions: Float[Tensor, "N 3"]) -> Float[Tensor, "N 4 4"]:
    """OpenCV camera-to-world poses of cameras at ``positions`` looking at the origin, z-up."""
    origin = positions.new_zeros(3)
    return look_at_opencv(positions, origin, positions.new_tensor(WORLD_UP))
