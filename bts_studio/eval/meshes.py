"""Meshes from value grids and DVR's mesh evaluation (Chamfer-L1, accuracy, completeness, normals, F-score).

- :func:`grid_to_mesh`: marching cubes (scikit-image) at the iso-level, vertices mapped into the grid's box,
  faces oriented outwards for values that are higher inside (occupancy logits).
- :func:`mesh_metrics`: DVR's ``MeshEvaluator`` protocol (``im2mesh/eval.py``; classics.md C.5): sample
  ``num_points`` (100k) points with face normals on the mesh (trimesh), nearest neighbours both ways to the
  ground-truth ``pointcloud.npz`` (scipy's cKDTree); accuracy = mean distance prediction -> GT, completeness =
  mean distance GT -> prediction (Euclidean, not squared), Chamfer-L1 = their mean, normal consistency = the
  mean of the two mean ``|n . n'|``, F-score at ``threshold`` from precision (prediction within ``threshold``
  of GT) and recall. DVR *reports Chamfer-L1 x 10* (units of 1/10 of the unit cube's edge); both the raw
  value and ``chamfer_l1_x10`` are returned. An empty mesh gives the worst values (distances
  ``sqrt(3)``, the cube's diagonal; normal consistency and F-score 0).
- :func:`mesh_correspondences`: the per-point distances, nearest-neighbour indices and ``|n . n'|`` that
  :func:`mesh_metrics` averages (``benchmarks/dvr_baselines.py nc-breakdown`` splits them by region).
- :func:`write_mesh`: PLY or OBJ with vertex colours, written atomically, never over an existing file.
"""

import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from bts_studio.utils.optional import import_optional


def _trimesh():
    return import_optional("trimesh", "DVR mesh extraction and evaluation")


EMPTY_MESH_DISTANCE = 3**0.5
"""Accuracy/completeness of an empty mesh: the unit cube's diagonal (no distance inside the cube is larger)."""


def grid_to_mesh(values: torch.Tensor | np.ndarray, half_extent: float, threshold: float = 0.0):
    """Marching cubes of ``[R, R, R]`` values (``[x, y, z]``, higher inside) over ``[-h, h]^3``; empty if no surface."""
    marching_cubes = import_optional("skimage.measure", "marching cubes", "pip install scikit-image").marching_cubes
    trimesh = _trimesh()
    volume = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    volume = volume.astype(np.float32)
    if not (volume.min() < threshold < volume.max()):
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False)
    # Pad with "outside" so surfaces touching the box close (the official code pads with -1e6).
    padded = np.pad(volume, 1, constant_values=min(float(volume.min()), threshold) - 1.0)
    spacing = 2 * half_extent / (volume.shape[0] - 1)
    vertices, faces, _, _ = marching_cubes(padded, level=threshold, spacing=(spacing,) * 3, gradient_direction="ascent")
    vertices = vertices - spacing - half_extent  # undo the padding, then into the box
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    # Orientation check: face normals must point away from increasing values (outwards); flip if not.
    centres = mesh.triangles_center
    probe = centres + 0.5 * spacing * mesh.face_normals
    index = np.clip(np.round((probe + half_extent) / spacing).astype(int), 0, volume.shape[0] - 1)
    outside_along_normal = volume[index[:, 0], index[:, 1], index[:, 2]] < threshold
    if outside_along_normal.mean() < 0.5:
        mesh.invert()
    return mesh


def mesh_correspondences(
    mesh,
    gt_points: np.ndarray,
    gt_normals: Optional[np.ndarray],
    num_points: int = 100_000,
    seed: int = 0,
) -> Optional[Dict[str, np.ndarray]]:
    """The per-point quantities behind :func:`mesh_metrics` (None for an empty mesh).

    Returns ``points`` / ``normals`` ``[N, 3]`` (``num_points`` samples on the mesh, face normals),
    ``to_gt`` / ``gt_index`` ``[N]`` (distance to and index of each sample's nearest ground-truth point: the
    accuracy side), ``to_pred`` / ``pred_index`` ``[P]`` (the completeness side), and, with ``gt_normals``,
    ``accuracy_normals`` ``[N]`` / ``completeness_normals`` ``[P]``: ``|n . n'|`` of each nearest pair.
    """
    from scipy.spatial import cKDTree

    trimesh = _trimesh()
    if len(mesh.faces) == 0 or mesh.area <= 0:
        return None
    points, faces = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    normals = mesh.face_normals[faces]
    gt_points = np.asarray(gt_points, dtype=np.float64)
    to_gt, gt_index = cKDTree(gt_points).query(points)
    to_pred, pred_index = cKDTree(points).query(gt_points)
    found = {"points": points, "normals": normals, "to_gt": to_gt, "gt_index": gt_index, "to_pred": to_pred,
             "pred_index": pred_index}  # fmt: skip
    if gt_normals is not None:
        gt_normals = np.asarray(gt_normals, dtype=np.float64)
        gt_normals = gt_normals / np.linalg.norm(gt_normals, axis=-1, keepdims=True).clip(1e-12)
        found["accuracy_normals"] = np.abs((normals * gt_normals[gt_index]).sum(-1))
        found["completeness_normals"] = np.abs((gt_normals * normals[pred_index]).sum(-1))
    return found


def mesh_metrics(
    mesh,
    gt_points: np.ndarray,
    gt_normals: Optional[np.ndarray],
    num_points: int = 100_000,
    fscore_threshold: float = 0.01,
    seed: int = 0,
) -> Dict[str, float]:
    """DVR's mesh metrics of ``mesh`` against a ground-truth point cloud (see the module docstring)."""
    keys = ("accuracy", "completeness", "chamfer_l1", "chamfer_l1_x10", "normal_consistency", "precision", "recall")
    found = mesh_correspondences(mesh, gt_points, gt_normals, num_points, seed)
    if found is None:
        worst = EMPTY_MESH_DISTANCE
        values = [worst, worst, worst, 10 * worst, 0.0, 0.0, 0.0]
        return {**dict(zip(keys, values, strict=True)), "fscore": 0.0, "fscore_threshold": fscore_threshold}
    to_gt, to_pred = found["to_gt"], found["to_pred"]
    accuracy, completeness = float(to_gt.mean()), float(to_pred.mean())
    if gt_normals is not None:
        accuracy_normals, completeness_normals = found["accuracy_normals"].mean(), found["completeness_normals"].mean()
        normal_consistency = float(0.5 * (accuracy_normals + completeness_normals))
    else:
        normal_consistency = float("nan")
    precision = float((to_gt <= fscore_threshold).mean())
    recall = float((to_pred <= fscore_threshold).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    chamfer = 0.5 * (accuracy + completeness)
    values = [accuracy, completeness, chamfer, 10 * chamfer, normal_consistency, precision, recall]
    return {**dict(zip(keys, values, strict=True)), "fscore": fscore, "fscore_threshold": fscore_threshold}


def write_mesh(mesh, path: Path, overwrite: bool = False) -> Path:
    """Write ``.ply`` or ``.obj`` (vertex colours kept) atomically; refuse to replace a file without ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".obj"):
        raise ValueError(f"{path}: mesh files must end in .ply or .obj")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}{suffix}")
    try:
        data = mesh.export(file_type=suffix[1:], **({"include_color": True} if suffix == ".obj" else {}))
        partial.write_bytes(data if isinstance(data, bytes) else data.encode())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
