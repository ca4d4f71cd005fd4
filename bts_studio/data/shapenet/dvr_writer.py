"""Writer of DVR's ShapeNet layout (Occupancy Networks / DVR ``Shapes3dDataset``).

    <root>/metadata.yaml                      synset id -> {id, name}
    <root>/<synset>/{train,val,test}.lst      one model id per line
    <root>/<synset>/<model>/image/0000.png    RGB, white background
    <root>/<synset>/<model>/mask/0000.png     8-bit grey, 255 on the object
    <root>/<synset>/<model>/depth/0000.npy    float32 [H, W] camera z-depth in world units, inf on background
    <root>/<synset>/<model>/cameras.npz       world_mat_i (4x4 world->camera, OpenCV), camera_mat_i
                                              (4x4 normalised intrinsics), scale_mat_i (identity)
    <root>/<synset>/<model>/pointcloud.npz    points, normals (float16, unit cube), loc, scale

DVR stores depth as OpenEXR, whose reader in imageio downloads a binary at run time; ``.npy`` keeps the
same values (inf on background) with nothing to download. docs/conventions.md, "ShapeNet (SRN and DVR)".
"""

from pathlib import Path
from typing import Dict, List

import numpy as np
import yaml
from PIL import Image

SYNSETS: Dict[str, tuple[str, str]] = {"cars": ("02958343", "car"), "chairs": ("03001627", "chair")}
"""Our class names -> (ShapeNet synset id, metadata.yaml name), as in ShapeNetCore."""

DVR_FOCAL = 2.1875
"""Focal length of DVR's ShapeNet renderings in normalised image coordinates (image spans [-1, 1])."""


def normalized_camera_matrix(focal: float) -> np.ndarray:
    """4x4 ``camera_mat``: maps camera points to normalised image coordinates ([-1, -1] = top-left corner)."""
    return np.diag([focal, focal, 1.0, 1.0])


def write_metadata(root: Path, classes: List[str]) -> None:
    """``metadata.yaml`` with one entry per synset, keyed by the synset id."""
    entries = {SYNSETS[name][0]: {"id": SYNSETS[name][0], "name": SYNSETS[name][1]} for name in classes}
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.yaml").write_text(yaml.safe_dump(entries, sort_keys=True))


def write_split_list(synset_dir: Path, split: str, model_ids: List[str]) -> None:
    """``<split>.lst``: one model id per line."""
    synset_dir.mkdir(parents=True, exist_ok=True)
    (synset_dir / f"{split}.lst").write_text("".join(f"{model}\n" for model in model_ids))


def write_dvr_object(
    object_dir: Path,
    images: np.ndarray,
    masks: np.ndarray,
    z_depths: np.ndarray,
    w2c_opencv: np.ndarray,
    focal: float,
    points: np.ndarray,
    normals: np.ndarray,
) -> None:
    """Write every file of one object.

    Args:
        object_dir: ``<root>/<synset>/<model>``.
        images: ``[V, H, W, 3]`` uint8.
        masks: ``[V, H, W]`` bool, True on the object.
        z_depths: ``[V, H, W]`` float camera z-depth, inf where the mask is False.
        w2c_opencv: ``[V, 4, 4]`` world-to-camera, OpenCV axes.
        focal: normalised focal length (``camera_mat``).
        points, normals: ``[P, 3]`` surface samples in the unit cube.
    """
    num_views = images.shape[0]
    assert masks.shape == images.shape[:3] and z_depths.shape == images.shape[:3], "one mask/depth per image"
    assert w2c_opencv.shape == (num_views, 4, 4), "one 4x4 world_mat per image"
    for folder in ("image", "mask", "depth"):
        (object_dir / folder).mkdir(parents=True, exist_ok=True)
    cameras = {}
    for view in range(num_views):
        Image.fromarray(images[view]).save(object_dir / "image" / f"{view:04d}.png", compress_level=1)
        Image.fromarray(masks[view].astype(np.uint8) * 255).save(object_dir / "mask" / f"{view:04d}.png")
        np.save(object_dir / "depth" / f"{view:04d}.npy", z_depths[view].astype(np.float32))
        cameras[f"world_mat_{view}"] = w2c_opencv[view].astype(np.float64)
        cameras[f"camera_mat_{view}"] = normalized_camera_matrix(focal)
        cameras[f"scale_mat_{view}"] = np.eye(4)
    np.savez(object_dir / "cameras.npz", **cameras)
    # Occupancy Networks stores surface samples as float16 with the mesh's loc/scale; we keep its keys.
    np.savez(
        object_dir / "pointcloud.npz",
        points=points.astype(np.float16),
        normals=normals.astype(np.float16),
        loc=np.zeros(3, dtype=np.float32),
        scale=np.float32(1.0),
    )
