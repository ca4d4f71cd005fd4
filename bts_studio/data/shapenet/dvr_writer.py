"""Writer of DVR's ShapeNet layout (Occupancy Networks / DVR ``Shapes3dDataset``).

    <root>/metadata.yaml                      synset id -> {id, name}
    <root>/<synset>/{train,val,test}.lst      one model id per line
    <root>/<synset>/<model>/image/0000.png    RGB, white background
    <root>/<synset>/<model>/mask/0000.png     8-bit grey, 255 on the object
    <root>/<synset>/<model>/depth/0000.npy    float32 [H, W] camera z-depth in world units, inf on background
    <root>/<synset>/<model>/cameras.npz       world_mat_i (4x4 world->camera, OpenCV), camera_mat_i
                                              (4x4 normalised intrinsics), scale_mat_i (identity)
    <root>/<synset>/<model>/pointcloud.npz    points, normals (float16, unit cube), loc, scale

Also (functions at the end): ``img_choy2016/`` input views with their own ``cameras.npz``, OpenEXR depth
(``depth/*.exr``, DVR's format) and a DTU-layout multi-view scene of one object (``write_dtu_scene``):
``world_mat_i`` the full projection ``K [R | t]`` in pixels (pixel centres at integers) of the scan's world,
``scale_mat_i`` a non-trivial uniform scale + translation from the unit object cube into that world,
``camera_mat_i`` mapping pixels to [-1, 1] as DVR's DTU files, plus our ``pointcloud.npz`` in the object frame.

DVR stores depth as OpenEXR, whose reader in imageio downloads a binary at run time; ``.npy`` keeps the
same values (inf on background) with nothing to download. docs/conventions.md, "ShapeNet (SRN and DVR)".
"""

from pathlib import Path
from typing import Dict, List

import numpy as np
import yaml
from PIL import Image

SYNSETS: Dict[str, tuple[str, str]] = {
    "cars": ("02958343", "car"),
    "cars-varied": ("02958343", "car"),
    "chairs": ("03001627", "chair"),
}
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


def write_exr_depth(path: Path, depth: np.ndarray) -> None:
    """Write float32 ``[H, W]`` depth as a one-channel (``Y``) ZIP-compressed OpenEXR file."""
    import OpenEXR

    assert depth.ndim == 2, f"depth must be [H, W], got {depth.shape}"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Y": np.ascontiguousarray(depth, dtype=np.float32)}) as exr:
        exr.write(str(path))


DTU_SCALE = 180.0
"""Scale of the DTU-style scene's ``scale_mat`` (object units -> "millimetres", like DTU's scans)."""
DTU_OFFSET = np.array([12.0, -30.0, 620.0])
"""Where the object's origin sits in the DTU-style world."""


def write_input_views(object_dir: Path, images: np.ndarray, w2c_opencv: np.ndarray, focal_px: float) -> None:
    """``img_choy2016/NNN.png`` and ``img_choy2016/cameras.npz`` (3x3 pixel intrinsics, as 3D-R2N2's)."""
    folder = object_dir / "img_choy2016"
    folder.mkdir(parents=True, exist_ok=True)
    size = images.shape[1]
    cameras = {}
    for view, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{view:03d}.png", compress_level=1)
        # 3D-R2N2's intrinsics put the principal point at the image centre in pixel units.
        cameras[f"camera_mat_{view}"] = np.array([[focal_px, 0, size / 2], [0, focal_px, size / 2], [0, 0, 1.0]])
        cameras[f"world_mat_{view}"] = w2c_opencv[view].astype(np.float64)
    np.savez(folder / "cameras.npz", **cameras)


def write_exr_depths(object_dir: Path, z_depths: np.ndarray) -> None:
    """Replace ``depth/*.npy`` by ``depth/*.exr`` (DVR's own depth format)."""
    folder = object_dir / "depth"
    for view, depth in enumerate(z_depths):
        write_exr_depth(folder / f"{view:04d}.exr", depth)
        (folder / f"{view:04d}.npy").unlink(missing_ok=True)


def write_dtu_scene(
    scene_dir: Path,
    images: np.ndarray,
    masks: np.ndarray,
    w2c_opencv: np.ndarray,
    focal_px: float,
    points: np.ndarray,
    normals: np.ndarray,
) -> None:
    """One object as a DTU-style scan (see the module docstring); poses are given in the object frame.

    ``world_mat_i = K [R_w | t_w]`` with the pose moved into the scan's world (``p_world = s p_obj + t``), so
    that ``world_mat_i @ scale_mat_i`` projects object points exactly as the object-frame camera does.
    """
    num_views, height, width = images.shape[:3]
    for folder in ("image", "mask"):
        (scene_dir / folder).mkdir(parents=True, exist_ok=True)
    scale_mat = np.eye(4)
    scale_mat[:3, :3] *= DTU_SCALE
    scale_mat[:3, 3] = DTU_OFFSET
    # OpenCV pixel convention of DTU: the top-left pixel's centre is (0, 0), hence the -0.5.
    intrinsics = np.array([[focal_px, 0, width / 2 - 0.5], [0, focal_px, height / 2 - 0.5], [0, 0, 1.0]])
    to_normalised = np.array([[2.0 / width, 0, -1.0, 0], [0, 2.0 / height, -1.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    cameras = {}
    for view in range(num_views):
        Image.fromarray(images[view]).save(scene_dir / "image" / f"{view:06d}.png", compress_level=1)
        Image.fromarray(masks[view].astype(np.uint8) * 255).save(scene_dir / "mask" / f"{view:03d}.png")
        world_to_object = np.linalg.inv(scale_mat)
        w2c_world = w2c_opencv[view] @ world_to_object  # camera frame from scan-world points
        # The camera frame is scaled with the world: keep R orthonormal and put the scale into t (and K's w).
        projection = np.eye(4)
        projection[:3, :4] = intrinsics @ (w2c_world[:3, :4] * DTU_SCALE)
        cameras[f"world_mat_{view}"] = projection
        cameras[f"scale_mat_{view}"] = scale_mat
        cameras[f"camera_mat_{view}"] = to_normalised
    np.savez(scene_dir / "cameras.npz", **cameras)
    np.savez(
        scene_dir / "pointcloud.npz",
        points=points.astype(np.float32),
        normals=normals.astype(np.float32),
        loc=np.zeros(3, dtype=np.float32),
        scale=np.float32(1.0),
    )
