"""What occupancy evaluation and bird's-eye views ask of a model: a density function and a depth map per image.

A :class:`FrameField` answers for one encoded source image. Both metric variants, the BEV renderer and the
"Depth + 4 m" baseline go through it, so a baseline is scored by exactly the code that scores the model.
"""

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from bts_studio.eval.occupancy import depth_band_occupancy, outside_frustum

DensityFunction = Callable[[Tensor], Tensor]
"""Maps camera-frame points ``[N, 3]`` (OpenCV axes, metres) to densities ``[N]``."""


@dataclass
class FrameField:
    """A model's answers for one source image.

    Attributes:
        density_function: densities at camera-frame points (see ``DensityFunction``).
        depth: predicted z-depth of the source image ``[H, W]`` (docs/conventions.md, "Depth").
        K: the source camera's intrinsics in nerfstudio pixel units (docs/conventions.md, "Pixels").
        chunk_size: points per call of ``density_function``.
    """

    density_function: DensityFunction
    depth: Float[Tensor, "H W"]
    K: Float[Tensor, "3 3"]
    chunk_size: int = 1 << 16

    def __post_init__(self) -> None:
        assert self.depth.ndim == 2, f"depth must be [H, W], got {tuple(self.depth.shape)}"
        assert self.K.shape == (3, 3), f"K must be [3, 3], got {tuple(self.K.shape)}"
        if not torch.isfinite(self.depth).all():
            raise ValueError("predicted depth map contains NaN or infinite values")

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])

    @torch.no_grad()
    def density(self, points_camera: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        """Densities at camera-frame points, evaluated in chunks; returned on the points' device."""
        assert points_camera.ndim == 2 and points_camera.shape[-1] == 3, f"expected [N, 3], got {points_camera.shape}"
        chunks = []
        for start in range(0, points_camera.shape[0], self.chunk_size):
            chunk = points_camera[start : start + self.chunk_size]
            values = self.density_function(chunk).reshape(-1)
            assert values.shape[0] == chunk.shape[0], f"density function returned {values.shape[0]} for {len(chunk)}"
            chunks.append(values.to(points_camera.device, torch.float32))
        if not chunks:
            return points_camera.new_zeros(0)
        densities = torch.cat(chunks)
        if not torch.isfinite(densities).all():
            raise ValueError("model returned NaN or infinite densities")
        return densities

    def outside_frustum(self, points_camera: Float[Tensor, "N 3"]) -> Bool[Tensor, " N"]:
        """Points this image does not see (BTS's ``invalid``)."""
        return outside_frustum(points_camera, self.K.to(points_camera), self.width, self.height)


BASELINE_OCCUPIED_DENSITY = 100.0
"""Density the depth baseline gives occupied points: far above the 0.5 threshold and enough to block a BEV column."""


def depth_plus_band_field(field: FrameField, band: float = 4.0) -> FrameField:
    """The paper's "Depth + 4 m" baseline built on a model's own depth map.

    Everything within ``band`` metres behind the predicted depth (camera z against the z-depth at the point's
    pixel, nearest pixel, border-clamped) is occupied; everything else is empty. Depth, intrinsics and thus the
    depth-based visibility are the model's.
    """
    depth, K = field.depth, field.K

    def density(points_camera: Tensor) -> Tensor:
        occupied = depth_band_occupancy(points_camera, K.to(points_camera), depth.to(points_camera), band)
        return occupied.float() * BASELINE_OCCUPIED_DENSITY

    return FrameField(density, depth, K, field.chunk_size)
