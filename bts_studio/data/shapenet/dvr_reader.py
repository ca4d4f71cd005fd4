"""Reader of DVR's ShapeNet layout: metadata, split lists, per-object views, cameras and point clouds.

Framework-free (numpy). Malformed input raises :class:`DVRFormatError` naming the file and what was
expected. Format: ``dvr_writer.py``; conventions: docs/conventions.md ("ShapeNet (SRN and DVR)").
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from bts_studio.data.checks import UserError, check_rigid, load_npz, npz_array

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".npy", ".exr")


class DVRFormatError(UserError):
    """A file or folder does not follow DVR's ShapeNet layout."""


@dataclass(frozen=True)
class InputViews:
    """Encoder input views of one object (``img_choy2016/`` when present, else the supervision images)."""

    image_paths: List[Path]
    intrinsics: Optional[np.ndarray]
    """``[V, 3, 3]`` pixel intrinsics from the folder's own ``cameras.npz`` (None when it has none)."""
    w2c: Optional[np.ndarray]
    """``[V, 4, 4]`` world-to-camera of the input views (None when the folder has no ``cameras.npz``)."""


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
    pixel_intrinsics: Optional[np.ndarray] = None
    """``[V, 4]`` (fx, fy, cx, cy) in nerfstudio pixels for DTU-style projection cameras (then ``camera_mats``
    is unused); None for ShapeNet-style normalised ``camera_mat_i``."""
    input_views: Optional[InputViews] = None
    """Encoder input views in ``img_choy2016/`` with their own cameras, when the object has them."""


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
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DVRFormatError(f"{path}: cannot be read as a split list of model ids ({error})") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


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
    archive = load_npz(path, "DVR's cameras.npz (world_mat_i, camera_mat_i, scale_mat_i)", DVRFormatError)
    if not hasattr(archive, "files"):
        raise DVRFormatError(f"{path}: expected an .npz archive of named matrices, got a single array")

    def get(key: str, default=None) -> np.ndarray:
        return npz_array(archive, key, path, DVRFormatError) if key in keys or default is None else default

    with archive:
        keys = set(archive.files)
        c2w, camera_mats, scales, offsets = [], [], [], []
        for view in range(num_views):
            if f"camera_mat_{view}" not in keys:
                raise DVRFormatError(
                    f"{path}: no camera_mat_{view}; the object has {num_views} images, so views 0..N-1"
                )
            world_mat = world_to_camera(archive, path, view)
            check_rigid(
                world_mat,
                f"{path}: world_mat_{view}",
                "DVR's ShapeNet/NMR world_mat_i is a rigid world-to-camera [R|t] (DTU-style full projections "
                "K[R|t] are recognised only when every world_mat_i is one).",
                DVRFormatError,
            )
            scale_mat = _as_4x4(get(f"scale_mat_{view}", np.eye(4)), path, f"scale_mat_{view}")
            scale, offset = uniform_scale(scale_mat, path, f"scale_mat_{view}")
            pose = np.linalg.inv(world_mat)
            pose[:3, 3] = (pose[:3, 3] - offset) / scale
            c2w.append(pose)
            camera_mats.append(_as_4x4(get(f"camera_mat_{view}"), path, f"camera_mat_{view}"))
            scales.append(scale)
            offsets.append(offset)
    if np.ptp(scales) > 1e-9 * scales[0] or np.ptp(np.stack(offsets), axis=0).max() > 1e-9 * scales[0]:
        raise DVRFormatError(f"{path}: scale_mat_i differ between views; one object-to-world scale is expected")
    return np.stack(c2w), np.stack(camera_mats), scales[0], offsets[0]


def world_to_camera(archive, path: Path, view: int) -> np.ndarray:
    """``world_mat_i``, or the inverse of ``world_mat_inv_i`` when that is all the file has (or both agree).

    pixelNeRF prefers ``world_mat_inv_i`` when present (the NMR files carry both).
    """
    key, inverse_key = f"world_mat_{view}", f"world_mat_inv_{view}"
    if inverse_key in archive.files:
        return np.linalg.inv(_as_4x4(npz_array(archive, inverse_key, path, DVRFormatError), path, inverse_key))
    if key not in archive.files:
        raise DVRFormatError(f"{path}: neither {key} nor {inverse_key}; views 0..N-1 need one of them")
    return _as_4x4(npz_array(archive, key, path, DVRFormatError), path, key)


def cameras_are_projections(path: Path) -> bool:
    """Whether ``cameras.npz`` holds DTU-style full projections in ``world_mat_0`` (see the end of this module)."""
    with load_npz(path, "DVR's cameras.npz", DVRFormatError) as archive:
        if "world_mat_0" not in archive.files:
            return False
        return is_projection_matrix(
            _as_4x4(npz_array(archive, "world_mat_0", path, DVRFormatError), path, "world_mat_0")
        )


def read_dtu_cameras(path: Path, num_views: int) -> Tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """DTU-style cameras: ``(c2w OpenCV in the object frame, pixel intrinsics [V, 4], scale, offset)``."""
    with load_npz(path, "DVR's cameras.npz", DVRFormatError) as archive:
        c2w, intrinsics = read_projection_cameras(archive, path, num_views)
        scale_mat = _as_4x4(archive.get("scale_mat_0", np.eye(4)), path, "scale_mat_0")
    scale, offset = uniform_scale(scale_mat, path, "scale_mat_0")
    return c2w, intrinsics, scale, offset


def object_files(
    synset_dir: Path, model_id: str
) -> Tuple[Path, List[Path], Optional[List[Path]], Optional[List[Path]]]:
    """The layout of one object folder, without reading any file: ``(folder, images, masks or None, depth maps
    or None)``.

    Raises:
        DVRFormatError: the folder, its images or its ``cameras.npz`` are missing, or ``mask/`` or ``depth/``
            holds another number of files than ``image/``.
    """
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
    if not (path / "cameras.npz").is_file():
        raise DVRFormatError(f"missing {path / 'cameras.npz'}: every DVR object folder needs cameras.npz")
    return path, image_paths, mask_paths, depth_paths


def read_object(synset_dir: Path, model_id: str) -> DVRObject:
    """Read one object folder (images, optional masks/depth, cameras)."""
    path, image_paths, mask_paths, depth_paths = object_files(synset_dir, model_id)
    cameras = path / "cameras.npz"
    pixel_intrinsics = None
    if cameras_are_projections(cameras):  # object_files checked that it exists
        c2w, pixel_intrinsics, scale, offset = read_dtu_cameras(cameras, len(image_paths))
        camera_mats = np.tile(np.eye(4), (len(image_paths), 1, 1))
    else:
        c2w, camera_mats, scale, offset = read_cameras(cameras, len(image_paths))
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
        pixel_intrinsics=pixel_intrinsics,
        input_views=read_input_views(path),
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
    if path.suffix.lower() == ".exr":
        return read_exr_depth(path)
    if path.suffix.lower() != ".npy":
        raise DVRFormatError(f"{path}: depth maps must be .npy (float32 [H, W]) or .exr (camera z-depth)")
    depth = load_npz(path, "a float32 [H, W] depth map (.npy)", DVRFormatError)
    if not isinstance(depth, np.ndarray):
        raise DVRFormatError(f"{path}: expected one [H, W] array (.npy), got an archive")
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise DVRFormatError(f"{path}: expected an [H, W] depth map, got shape {depth.shape}")
    return depth.astype(np.float32)


def load_pointcloud(path: Path, object_to_world: Optional[Any] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``points, normals`` (float32 ``[P, 3]``) of a ``pointcloud.npz``, optionally mapped by a 3x4 transform.

    Pass the dataparser's ``metadata["object_to_world"]`` (a ``[3, 4]`` array or tensor) for the nerfstudio world.
    """
    with load_npz(path, "DVR's pointcloud.npz (points, normals)", DVRFormatError) as archive:
        if "points" not in archive.files:
            raise DVRFormatError(f"{path}: no 'points' array")
        points = npz_array(archive, "points", path, DVRFormatError).astype(np.float32)
        has_normals = "normals" in archive.files
        normals = npz_array(archive, "normals", path, DVRFormatError).astype(np.float32) if has_normals else None
    if normals is None:
        normals = np.zeros_like(points)
    if object_to_world is not None:
        transform = np.asarray(object_to_world, dtype=np.float32)
        points = points @ transform[:3, :3].T + transform[:3, 3]
        normals = normals @ transform[:3, :3].T
    return points, normals


# ----------------------------------------------------------------------------------------------------------
# DVR data beyond the basic ShapeNet object folder
#
# - ``depth/*.exr``: DVR's camera z-depth maps (world units, ``inf`` on background). DVR reads them through
#   imageio's FreeImage plugin, which downloads a binary at run time; here the ``OpenEXR`` package from PyPI
#   reads and writes them (one float channel; the first of ``Y, Z, R, depth`` or the only one).
# - DTU-style ``cameras.npz`` (DVR's multi-view data, classics.md C.4(c)): ``world_mat_i`` is a full 3x4/4x4
#   projection ``K [R | t]`` in pixels (pixel centres at integers, OpenCV), ``scale_mat_i`` maps the unit
#   object cube into the scan's world. As pixelNeRF, ``P = world_mat @ scale_mat`` is decomposed with
#   ``cv2.decomposeProjectionMatrix`` into pixel intrinsics and a camera pose in the normalised object frame.
# - ``img_choy2016/``: the 3D-R2N2 renderings DVR's ShapeNet models take as encoder input, with their own
#   ``cameras.npz`` (3x3 pixel intrinsics ``camera_mat_i``, ``world_mat_i``); classics.md C.4(a).

EXR_DEPTH_CHANNELS = ("Y", "Z", "R", "depth", "V")
"""Channel names tried, in order, for the depth of an ``.exr`` file."""


def exr_error(path: Path, message: str) -> Exception:
    return DVRFormatError(f"{path}: {message}")


def read_exr_depth(path: Path) -> np.ndarray:
    """float32 ``[H, W]`` depth from an OpenEXR file (``inf`` kept). Raises ``DVRFormatError`` when unreadable."""
    try:
        import OpenEXR
    except ImportError as error:  # pragma: no cover - OpenEXR is a dependency
        raise exr_error(path, "reading .exr depth needs the OpenEXR package (pip install OpenEXR)") from error
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = {name: channel.pixels for name, channel in exr.channels().items()}
    except Exception as error:  # OpenEXR raises plain RuntimeError/OSError for truncated or foreign files
        raise exr_error(path, f"cannot read as OpenEXR ({error})") from error
    name = next((name for name in EXR_DEPTH_CHANNELS if name in channels), None)
    if name is None:
        if len(channels) != 1:
            raise exr_error(path, f"no depth channel among {sorted(channels)} (expected one of {EXR_DEPTH_CHANNELS})")
        name = next(iter(channels))
    depth = np.asarray(channels[name], dtype=np.float32)
    if depth.ndim != 2:
        raise exr_error(path, f"channel {name!r} has shape {depth.shape}, expected [H, W]")
    return depth


def is_projection_matrix(world_mat: np.ndarray, tolerance: float = 1e-4) -> bool:
    """True when ``world_mat[:3, :3]`` is not a rotation, i.e. it is a full ``K [R | t]`` projection (DTU)."""
    rotation = world_mat[:3, :3]
    return not (
        np.allclose(rotation @ rotation.T, np.eye(3), atol=tolerance) and abs(np.linalg.det(rotation) - 1) < tolerance
    )


def decompose_projection(projection: np.ndarray, path: Path, key: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(K [3, 3] with K[2, 2] = 1, camera-to-world [4, 4] OpenCV)`` of a 3x4 projection, as pixelNeRF does.

    Raises ``DVRFormatError`` when the matrix is singular or its intrinsics are not positive.
    """
    import cv2

    if abs(np.linalg.det(projection[:3, :3])) < 1e-12:
        raise exr_error(path, f"{key}: singular projection matrix")
    intrinsics, rotation, centre = cv2.decomposeProjectionMatrix(projection[:3, :4].astype(np.float64))[:3]
    intrinsics = intrinsics / intrinsics[2, 2]
    # decomposeProjectionMatrix may return K with negative diagonal entries paired with a flipped R; fix signs.
    signs = np.diag(np.sign(np.diag(intrinsics)))
    intrinsics, rotation = intrinsics @ signs, signs @ rotation
    if np.linalg.det(rotation) < 0:
        raise exr_error(path, f"{key}: projection decomposes into a reflection, not a camera")
    c2w = np.eye(4)
    c2w[:3, :3] = rotation.T  # decomposeProjectionMatrix returns the world-to-camera rotation
    c2w[:3, 3] = (centre[:3] / centre[3])[:, 0]
    if not (intrinsics[0, 0] > 0 and intrinsics[1, 1] > 0):
        raise exr_error(path, f"{key}: focal lengths must be positive, got {intrinsics[0, 0]}, {intrinsics[1, 1]}")
    return intrinsics, c2w


def read_projection_cameras(archive, path: Path, num_views: int) -> Tuple[np.ndarray, np.ndarray]:
    """DTU-style cameras: ``(c2w [V, 4, 4] OpenCV in the object frame, pixel intrinsics [V, 4] fx fy cx cy)``.

    Intrinsics are in nerfstudio pixels (pixel centres at +0.5): DTU's projections put centres at integers.
    """
    c2w, intrinsics = [], []
    for view in range(num_views):
        key = f"world_mat_{view}"
        if key not in archive.files:
            raise DVRFormatError(f"{path}: no {key}; the object has {num_views} images, so views 0..N-1")
        world_mat = _as_4x4(npz_array(archive, key, path, DVRFormatError), path, key)
        scale_mat = (
            _as_4x4(npz_array(archive, f"scale_mat_{view}", path, DVRFormatError), path, f"scale_mat_{view}")
            if (f"scale_mat_{view}" in archive.files)
            else np.eye(4)
        )
        k, pose = decompose_projection(world_mat @ scale_mat, path, key)
        c2w.append(pose)
        intrinsics.append((k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5))
    return np.stack(c2w), np.asarray(intrinsics, dtype=np.float64)


def read_input_views(object_dir: Path, folder: str = "img_choy2016") -> Optional[InputViews]:
    """The ``folder`` input views (sorted ``.jpg``/``.png``) and their ``cameras.npz``; None when absent.

    3D-R2N2's ``camera_mat_i`` are 3x3 pixel intrinsics (focal 149.84 px, centre 68.5 for 137 px images;
    DVR issue #64), unlike the normalised 4x4 ones of DVR's own renderings.
    """
    directory = object_dir / folder
    paths = _sorted_files(directory, IMAGE_SUFFIXES)
    if not paths:
        return None
    cameras = directory / "cameras.npz"
    if not cameras.is_file():
        return InputViews(paths, None, None)
    intrinsics, w2c = [], []
    with load_npz(cameras, "DVR's cameras.npz", DVRFormatError) as archive:
        for view in range(len(paths)):
            for key in (f"camera_mat_{view}", f"world_mat_{view}"):
                if key not in archive.files:
                    raise DVRFormatError(f"{cameras}: no {key} for the {len(paths)} images of {directory}")
            k = np.asarray(npz_array(archive, f"camera_mat_{view}", cameras, DVRFormatError), dtype=np.float64)[:3, :3]
            if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
                raise DVRFormatError(f"{cameras}: camera_mat_{view} must hold finite positive focal lengths")
            intrinsics.append(k)
            w2c.append(
                _as_4x4(npz_array(archive, f"world_mat_{view}", cameras, DVRFormatError), cameras, f"world_mat_{view}")
            )
    return InputViews(paths, np.stack(intrinsics), np.stack(w2c))
