"""3D exports of one image's density field: a voxel grid over the camera frustum, point clouds, a mesh.

Everything is in the source camera's OpenCV frame (x right, y down, +z forward; metres for KITTI-360 models).
The field is a :class:`~bts_studio.eval.density_field.FrameField`, so the model and the "Depth + 4 m" baseline are
exported by the same code (the benchmark in docs/benchmarks.md compares both with a scene's exact occupancy).

* ``voxels``: :func:`frustum_grid` samples density at voxel centres of a box around the frustum between
  ``near`` and ``max_depth``; written as ``.npz`` (density, in-frustum mask, axes, K) plus the occupied centres
  (density above ``OCCUPIED_DENSITY_THRESHOLD`` = 0.5, the occupancy evaluation's threshold, inside the image)
  as a coloured ``.ply``.
* ``pointcloud``: the depth map back-projected, one point per pixel, coloured by that pixel.
* ``mesh``: scikit-image's marching cubes of the same grid at the same threshold, vertices coloured from the
  photo; written with trimesh (``.ply`` and/or ``.obj``).
Colours come from projecting each point into the photo (nearest pixel, border-clamped: BTS reads colours of
points outside the image from its border too).
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from torch import Tensor

from bts_studio.eval.density_field import FrameField
from bts_studio.eval.occupancy import OCCUPIED_DENSITY_THRESHOLD, outside_frustum
from bts_studio.eval.predict_outputs import atomic_target


@dataclass(frozen=True)
class FrustumGrid:
    """Voxel centres of an axis-aligned box around the camera frustum (camera frame, metres)."""

    xs: Float[Tensor, " X"]
    ys: Float[Tensor, " Y"]
    zs: Float[Tensor, " Z"]
    voxel_size: float

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(Z, Y, X)``: arrays are laid out depth-major, rows (y down) then columns."""
        return len(self.zs), len(self.ys), len(self.xs)

    def points(self) -> Float[Tensor, "Z Y X 3"]:
        z, y, x = torch.meshgrid(self.zs, self.ys, self.xs, indexing="ij")
        return torch.stack([x, y, z], dim=-1)


def frustum_grid(
    K: Float[Tensor, "3 3"], width: int, height: int, near: float, max_depth: float, voxel_size: float
) -> FrustumGrid:
    """The box ``[x0, x1] x [y0, y1] x [near, max_depth]`` that holds the image's frustum up to ``max_depth``,
    sampled at ``voxel_size`` (voxel centres; the box is rounded out to whole voxels whose faces lie on
    multiples of ``voxel_size``).

    Raises:
        ValueError: non-positive voxel size or an empty depth range.
    """
    if voxel_size <= 0 or not 0 < near < max_depth:
        raise ValueError(f"need voxel_size > 0 and 0 < near < max_depth, got {voxel_size}, {near}, {max_depth}")
    K = K.double()
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    x_range = (-cx / fx * max_depth, (width - cx) / fx * max_depth)
    y_range = (-cy / fy * max_depth, (height - cy) / fy * max_depth)

    def axis(start: float, end: float) -> Tensor:
        # voxel faces on multiples of voxel_size: the same voxels for every image and for the baseline
        first, last = math.floor(start / voxel_size + 1e-9), math.ceil(end / voxel_size - 1e-9)
        return (torch.arange(first, max(last, first + 1), dtype=torch.float64) + 0.5).mul(voxel_size).float()

    return FrustumGrid(axis(*x_range), axis(*y_range), axis(near, max_depth), voxel_size)


@dataclass
class VoxelField:
    """Densities of a field on a :class:`FrustumGrid`."""

    grid: FrustumGrid
    density: Float[np.ndarray, "Z Y X"]
    inside: Bool[np.ndarray, "Z Y X"]
    """The voxel centre projects into the image (BTS has no information outside it)."""

    @property
    def occupied(self) -> Bool[np.ndarray, "Z Y X"]:
        return (self.density > OCCUPIED_DENSITY_THRESHOLD) & self.inside

    def centres(self, mask: Optional[np.ndarray] = None) -> Float[np.ndarray, "N 3"]:
        points = self.grid.points().numpy()
        return points[self.occupied if mask is None else mask]


def sample_voxels(field: FrameField, grid: FrustumGrid) -> VoxelField:
    """Density of ``field`` at every voxel centre (chunked by ``FrameField.density``)."""
    points = grid.points().reshape(-1, 3).to(field.depth.device)
    density = field.density(points).reshape(grid.shape)
    inside = ~outside_frustum(points, field.K.to(points), field.width, field.height).reshape(grid.shape)
    return VoxelField(grid, density.cpu().numpy().astype(np.float32), inside.cpu().numpy())


def colours_from_image(
    points: Float[np.ndarray, "N 3"], K: Float[Tensor, "3 3"], image: Float[Tensor, "3 H W"]
) -> UInt8[np.ndarray, "N 3"]:
    """Colour of each camera-frame point's nearest pixel in the image (border-clamped)."""
    from bts_studio.core.geometry import project_points

    if len(points) == 0:
        return np.zeros((0, 3), np.uint8)
    identity = torch.eye(4, dtype=torch.float32)[:3]
    uv, _ = project_points(torch.from_numpy(points).float(), K.float().cpu(), identity)
    height, width = image.shape[-2:]
    columns = uv[:, 0].floor().long().clamp(0, width - 1)
    rows = uv[:, 1].floor().long().clamp(0, height - 1)
    colours = image.cpu()[:, rows, columns].T
    return (colours.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def depth_point_cloud(
    depth: Float[Tensor, "H W"], K: Float[Tensor, "3 3"], max_depth: Optional[float] = None
) -> Tuple[Float[np.ndarray, "N 3"], Bool[np.ndarray, "H W"]]:
    """Pixel centres back-projected to their z-depth (camera frame); pixels deeper than ``max_depth`` dropped."""
    height, width = depth.shape
    K = K.double().cpu()
    rows, columns = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    z = depth.double().cpu()
    x = (columns - K[0, 2]) / K[0, 0] * z
    y = (rows - K[1, 2]) / K[1, 1] * z
    keep = torch.isfinite(z) & (z > 0)
    if max_depth is not None:
        keep &= z <= max_depth
    points = torch.stack([x, y, z], dim=-1)[keep]
    return points.float().numpy(), keep.numpy()


def write_point_cloud(path: Path, points: np.ndarray, colours: np.ndarray, overwrite: bool = False) -> Path:
    """Binary PLY of coloured points (trimesh)."""
    import trimesh

    cloud = trimesh.PointCloud(vertices=points.astype(np.float64), colors=colours)
    with atomic_target(path, overwrite) as temporary:
        cloud.export(temporary, file_type="ply")
    return path


def marching_cubes_mesh(voxels: VoxelField, level: float = OCCUPIED_DENSITY_THRESHOLD):
    """Surface where the density crosses ``level`` (scikit-image marching cubes), camera-frame vertices.

    Outside the image the density is set to 0 so the surface closes along the frustum's sides. Returns a trimesh
    mesh, or None when the grid has no crossing.
    """
    import trimesh
    from skimage.measure import marching_cubes

    volume = np.where(voxels.inside, voxels.density, 0.0).astype(np.float32)
    volume = np.pad(volume, 1, constant_values=0.0)  # closes surfaces that touch the grid's faces
    if not volume.min() < level < volume.max():
        return None
    size = voxels.grid.voxel_size
    vertices, faces, _, _ = marching_cubes(volume, level=level, spacing=(size, size, size))
    grid = voxels.grid
    origin = np.array([float(grid.zs[0]), float(grid.ys[0]), float(grid.xs[0])]) - size  # the padding voxel
    vertices = (vertices + origin)[:, ::-1].copy()  # (z, y, x) -> (x, y, z)
    # skimage winds faces for (z, y, x) indices with normals towards lower values; swapping to (x, y, z) mirrors
    # the winding, which leaves the normals pointing out of the dense region (positive volume; tested)
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=False)


def write_mesh(path: Path, mesh, overwrite: bool = False) -> Path:
    with atomic_target(path, overwrite) as temporary:
        mesh.export(temporary, file_type=path.suffix.lstrip("."))
    return path


def write_voxels_npz(path: Path, voxels: VoxelField, K: Tensor, size: Tuple[int, int], overwrite: bool = False):
    """``density [Z, Y, X]`` (float32), ``inside`` mask, axis centres ``xs, ys, zs``, ``voxel_size``, ``K`` and the
    image ``size`` (height, width) as one ``.npz``."""
    arrays: Dict[str, np.ndarray] = {
        "density": voxels.density,
        "inside": voxels.inside,
        "occupied": voxels.occupied,
        "xs": voxels.grid.xs.numpy(),
        "ys": voxels.grid.ys.numpy(),
        "zs": voxels.grid.zs.numpy(),
        "voxel_size": np.float32(voxels.grid.voxel_size),
        "occupied_threshold": np.float32(OCCUPIED_DENSITY_THRESHOLD),
        "K": K.double().cpu().numpy(),
        "image_size_hw": np.array(size, dtype=np.int64),
    }
    with atomic_target(path, overwrite) as temporary:
        with open(temporary, "wb") as stream:
            np.savez_compressed(stream, **arrays)
    return path
