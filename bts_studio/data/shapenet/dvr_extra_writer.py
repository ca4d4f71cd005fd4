"""Writers for the DVR data beyond the basic object folder: input views, EXR depth and a DTU-style scene.

- ``img_choy2016/000.png ...`` plus its own ``cameras.npz`` (3x3 pixel ``camera_mat_i``, 4x4 ``world_mat_i``),
  the encoder input views of DVR's ShapeNet set (3D-R2N2 renderings; classics.md C.4(a)).
- A DTU-layout multi-view scene of one object (``write_dtu_scene``): ``image/``, ``mask/``, ``cameras.npz``
  whose ``world_mat_i`` is the full projection ``K [R | t]`` in pixels (pixel centres at integers) of the
  *scan's* world, ``scale_mat_i`` a non-trivial uniform scale + translation taking the unit object cube into
  that world, and ``camera_mat_i`` mapping pixels to [-1, 1] (as DVR's DTU files); plus our
  ``pointcloud.npz`` in the object frame for evaluation.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from bts_studio.data.shapenet.dvr_formats_extra import write_exr_depth

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
