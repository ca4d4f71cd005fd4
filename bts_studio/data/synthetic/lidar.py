"""A 64-beam spinning lidar (Velodyne HDL-64E pattern), ray cast against the scene.

Directions are in the velodyne frame (x forward, y left, z up). A whole revolution is taken at the frame's
pose (no motion distortion), which keeps the ground truth exact: every returned point lies on a surface.
"""

import math

import torch
from torch import Tensor

BEAMS = 64
MIN_RANGE = 2.0
"""Returns closer than this are dropped (the real sensor sees its own car there)."""
MAX_RANGE = 120.0


def beam_elevations() -> Tensor:
    """HDL-64E elevation angles (radians): upper block +2 .. -8.33 deg, lower block -8.83 .. -24.33 deg."""
    upper = torch.linspace(2.0, -8.33, 32, dtype=torch.float64)
    lower = torch.linspace(-8.83, -24.33, 32, dtype=torch.float64)
    return torch.deg2rad(torch.cat([upper, lower]))


def scan_directions(azimuths: int, tile: int = 8) -> Tensor:
    """Unit directions ``[BEAMS * azimuths, 3]`` (velodyne frame), grouped in ``tile x 32`` blocks.

    The block order keeps consecutive rays close together, which the ray caster's culling needs.
    """
    assert azimuths % 32 == 0, "azimuths must be a multiple of 32"
    elevation = beam_elevations()
    azimuth = torch.arange(azimuths, dtype=torch.float64) * (2 * math.pi / azimuths)
    el, az = torch.meshgrid(elevation, azimuth, indexing="ij")
    directions = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=-1)  # [64, A, 3]
    blocks = directions.view(BEAMS // tile, tile, azimuths // 32, 32, 3).permute(0, 2, 1, 3, 4)
    return blocks.reshape(-1, 3).float()
