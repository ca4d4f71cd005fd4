"""Reader of DVR's ShapeNet layout: metadata, split lists, per-object views, cameras and point clouds.

Framework-free (numpy). Malformed input raises :class:`DVRFormatError` naming the file and what was
expected. Format: ``dvr_writer.py``; conventions: docs/conventions.md ("ShapeNet (SRN and DVR)").
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".npy", ".exr")


class DVRFormatError(ValueError):
    """A file or folder does not follow DVR's ShapeNet layout."""


@dataclass(frozen=True)
class DVRObject:
    """One object folder: sorted views (view i = i-th sorted image) with their cameras."""

    synset: str
    model_id: str
    path: Path
    image_paths: List[Path]
    mask_paths: Optional[List[Path]]
    depth_paths: Optional[List[Path]]
    c2w_opencv: np.ndarray
    """``[V, 4, 4]`` camera-to-world in OpenCV axes, in the object's normalised frame (``scale_mat`` undone)."""
    camera_mats: np.ndarray
    """``[V, 4, 4]`` normalised intrinsics (``camera_mat_i``)."""
    world_scale: float
    """Uniform scale of ``scale_mat`` (object units -> world units); 1 for ShapeNet."""
    world_offset: np.ndarray
    """Translation of ``scale_mat`` (where the object origin is in the world); 0 for ShapeNet."""
    pointcloud_path: Optional[Path]


def read_metadata(root: Path) -> Dict[str, str]:
    """Synset id -> class name from ``metadata.yaml``; without it, every sub-folder is a synset (as DVR does)."""
    if not root.is_dir():
        raise DVRFormatError(f"{root} is not a folder (expected a DVR dataset root with metadata.yaml)")
    path = root / "metadata.yaml"
    if not path.is_file():
        return {child.name: "n/a" for child in sorted(root.iterdir()) if child.is_dir()}
    try:
        entries = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DVRFormatError(f"cannot parse {path}: {error}") from error
    if not isinstance(entries, dict):
        raise DVRFormatError(f"{path}: expected a mapping synset id -> {{id, name}}")
    return {str(key): str((value or {}).get("name", "n/a")) for key, value in entries.items()}


def read_split_list(path: Path) -> List[str]:
    """Model ids of a ``<split>.lst`` file (blank lines skipped)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _sorted_files(folder: Path, suffixes: Sequence[str]) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in suffixes)


def _as_4x4(matrix: np.ndarray, path: Path, key: str) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (3, 4):
        matrix = np.concatenate([matrix, [[0.0, 0.0, 0.0, 1.0]]], axis=0)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise DVRFormatError(f"{path}: {key} must be a finite 3x4 or 4x4 matrix, got shape {matrix.shape}")
    return matrix


def uniform_scale(scale_mat: np.ndarray, path: Path, key: str) -> Tuple[float, np.ndarray]:
    """``(s, t)`` of a ``scale_mat`` ``[[s I, t], [0, 1]]`` (object -> world); other matrices are refused."""
    diagonal = np.diag(scale_mat)[:3]
    off_diagonal = scale_mat[:3, :3] - np.diag(diagonal)
    if np.abs(off_diagonal).max() > 1e-9 or np.ptp(diagonal) > 1e-9 * abs(diagonal[0]) or diagonal[0] <= 0:
        raise DVRFormatError(f"{path}: {key} is not a uniform scale + translation; only those are supported")
    return float(diagonal[0]), scale_mat[:3, 3].copy()


def read_cameras(path: Path, num_views: int) -> Tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Cameras of views ``0..num_views-1``: OpenCV camera-to-world in object units, camera_mats, scale, offset.

    ``world_mat_i`` is world->camera; it is inverted here. ``scale_mat_i`` (object -> world, identity for
    ShapeNet) is undone so the returned poses live in the normalised object frame (the unit cube).
    """
    if not path.is_file():
        raise DVRFormatError(f"missing {path}: every DVR object folder needs cameras.npz")
    try:
        archive = np.load(path)
    except (OSError, ValueError) as error:
        raise DVRFormatError(f"cannot read {path}: {error}") from error
    with archive:
        keys = set(archive.files)
        c2w, camera_mats, scales, offsets = [], [], [], []
        for view in range(num_views):
            for key in (f"world_mat_{view}", f"camera_mat_{view}"):
                if key not in keys:
                    raise DVRFormatError(f"{path}: no {key}; the object has {num_views} images, so views 0..N-1")
            world_mat = _as_4x4(archive[f"world_mat_{view}"], path, f"world_mat_{view}")
            scale_mat = _as_4x4(archive.get(f"scale_mat_{view}", np.eye(4)), path, f"scale_mat_{view}")
            scale, offset = uniform_scale(scale_mat, path, f"scale_mat_{view}")
            pose = np.linalg.inv(world_mat)
            pose[:3, 3] = (pose[:3, 3] - offset) / scale
            c2w.append(pose)
            camera_mats.append(_as_4x4(archive[f"camera_mat_{view}"], path, f"camera_mat_{view}"))
            scales.append(scale)
            offsets.append(offset)
    if np.ptp(scales) > 1e-9 * scales[0] or np.ptp(np.stack(offsets), axis=0).max() > 1e-9 * scales[0]:
        raise DVRFormatError(f"{path}: scale_mat_i differ between views; one object-to-world scale is expected")
    return np.stack(c2w), np.stack(camera_mats), scales[0], offsets[0]


def read_object(synset_dir: Path, model_id: str) -> DVRObject:
    """Read one object folder (images, optional masks/depth, cameras)."""
    path = synset_dir / model_id
    if not path.is_dir():
        raise DVRFormatError(f"{path} listed in a split file does not exist")
    image_paths = _sorted_files(path / "image", IMAGE_SUFFIXES)
    if not image_paths:
        raise DVRFormatError(f"{path / 'image'}: no images (.png/.jpg) found")
    mask_paths = _sorted_files(path / "mask", (".png",)) or None
    depth_paths = _sorted_files(path / "depth", DEPTH_SUFFIXES) or None
    for name, paths in (("mask", mask_paths), ("depth", depth_paths)):
        if paths is not None and len(paths) != len(image_paths):
            raise DVRFormatError(f"{path / name}: {len(paths)} files for {len(image_paths)} images in image/")
    c2w, camera_mats, scale, offset = read_cameras(path / "cameras.npz", len(image_paths))
    pointcloud = path / "pointcloud.npz"
    return DVRObject(
        synset=synset_dir.name,
        model_id=model_id,
        path=path,
        image_paths=image_paths,
        mask_paths=mask_paths,
        depth_paths=depth_paths,
        c2w_opencv=c2w,
        camera_mats=camera_mats,
        world_scale=scale,
        world_offset=offset,
        pointcloud_path=pointcloud if pointcloud.is_file() else None,
    )


def normalized_to_pixel_intrinsics(
    camera_mat: np.ndarray, height: int, width: int, corner_aligned: bool = False
) -> Tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` in nerfstudio pixels from a normalised ``camera_mat``.

    Default: the image spans [-1, 1] edge to edge, ``u = (x + 1) W / 2`` (pixelNeRF's conversion, and
    ``grid_sample(align_corners=False)``). ``corner_aligned``: DVR's own ``arange_pixels``, which puts the
    centres of the first and last pixels at -1 and 1, ``u = (x + 1) (W - 1) / 2 + 0.5``.
    """
    span_x, span_y = (width - 1, height - 1) if corner_aligned else (width, height)
    offset = 0.5 if corner_aligned else 0.0
    fx = camera_mat[0, 0] * span_x / 2
    fy = camera_mat[1, 1] * span_y / 2
    cx = (camera_mat[0, 2] + 1) * span_x / 2 + offset
    cy = (camera_mat[1, 2] + 1) * span_y / 2 + offset
    return float(fx), float(fy), float(cx), float(cy)


def read_depth(path: Path) -> np.ndarray:
    """A depth map as float32 ``[H, W]`` camera z-depth (inf on background) from ``.npy`` or ``.exr``."""
    if path.suffix.lower() != ".npy":
        # DVR's EXR depth needs an EXR reader at run time (imageio's downloads a binary); we do not ship one.
        raise DVRFormatError(f"{path}: only .npy depth maps are read; convert EXR depth to float32 .npy first")
    depth = np.load(path)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise DVRFormatError(f"{path}: expected an [H, W] depth map, got shape {depth.shape}")
    return depth.astype(np.float32)


def load_pointcloud(path: Path, object_to_world: Optional[Any] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``points, normals`` (float32 ``[P, 3]``) of a ``pointcloud.npz``, optionally mapped by a 3x4 transform.

    Pass the dataparser's ``metadata["object_to_world"]`` (a ``[3, 4]`` array or tensor) for the nerfstudio world.
    """
    with np.load(path) as archive:
        if "points" not in archive.files:
            raise DVRFormatError(f"{path}: no 'points' array")
        points = archive["points"].astype(np.float32)
        normals = archive["normals"].astype(np.float32) if "normals" in archive.files else np.zeros_like(points)
    if object_to_world is not None:
        transform = np.asarray(object_to_world, dtype=np.float32)
        points = points @ transform[:3, :3].T + transform[:3, 3]
        normals = normals @ transform[:3, :3].T
    return points, normals
