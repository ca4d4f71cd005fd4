"""DVR data beyond the basic ShapeNet object folder: OpenEXR depth, DTU-style projection cameras, input views.

- ``depth/*.exr``: DVR's camera z-depth maps (world units, ``inf`` on background). DVR reads them through
  imageio's FreeImage plugin, which downloads a binary at run time; here the ``OpenEXR`` package from PyPI
  reads and writes them (one float channel; the first of ``Y, Z, R, depth`` or the only one).
- DTU-style ``cameras.npz`` (DVR's multi-view data, classics.md C.4(c)): ``world_mat_i`` is a full 3x4/4x4
  projection ``K [R | t]`` in pixels (pixel centres at integers, OpenCV), ``scale_mat_i`` maps the unit
  object cube into the scan's world. As pixelNeRF, ``P = world_mat @ scale_mat`` is decomposed with
  ``cv2.decomposeProjectionMatrix`` into pixel intrinsics and a camera pose in the normalised object frame.
- ``img_choy2016/``: the 3D-R2N2 renderings DVR's ShapeNet models take as encoder input, with their own
  ``cameras.npz`` (3x3 pixel intrinsics ``camera_mat_i``, ``world_mat_i``); classics.md C.4(a).

Framework-free numpy; bad input raises :class:`~bts_studio.data.shapenet.dvr_reader.DVRFormatError`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

EXR_DEPTH_CHANNELS = ("Y", "Z", "R", "depth", "V")
"""Channel names tried, in order, for the depth of an ``.exr`` file."""


def exr_error(path: Path, message: str) -> Exception:
    from bts_studio.data.shapenet.dvr_reader import DVRFormatError

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


def write_exr_depth(path: Path, depth: np.ndarray) -> None:
    """Write float32 ``[H, W]`` depth as a one-channel (``Y``) ZIP-compressed OpenEXR file."""
    import OpenEXR

    assert depth.ndim == 2, f"depth must be [H, W], got {depth.shape}"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Y": np.ascontiguousarray(depth, dtype=np.float32)}) as exr:
        exr.write(str(path))


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
    from bts_studio.data.shapenet.dvr_reader import DVRFormatError, _as_4x4

    c2w, intrinsics = [], []
    for view in range(num_views):
        key = f"world_mat_{view}"
        if key not in archive.files:
            raise DVRFormatError(f"{path}: no {key}; the object has {num_views} images, so views 0..N-1")
        world_mat = _as_4x4(archive[key], path, key)
        scale_mat = (
            _as_4x4(archive[f"scale_mat_{view}"], path, f"scale_mat_{view}")
            if (f"scale_mat_{view}" in archive.files)
            else np.eye(4)
        )
        k, pose = decompose_projection(world_mat @ scale_mat, path, key)
        c2w.append(pose)
        intrinsics.append((k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5))
    return np.stack(c2w), np.asarray(intrinsics, dtype=np.float64)


@dataclass(frozen=True)
class InputViews:
    """Encoder input views of one object (``img_choy2016/`` when present, else the supervision images)."""

    image_paths: List[Path]
    intrinsics: Optional[np.ndarray]
    """``[V, 3, 3]`` pixel intrinsics from the folder's own ``cameras.npz`` (None when it has none)."""
    w2c: Optional[np.ndarray]
    """``[V, 4, 4]`` world-to-camera of the input views (None when the folder has no ``cameras.npz``)."""


def read_input_views(object_dir: Path, folder: str = "img_choy2016") -> Optional[InputViews]:
    """The ``folder`` input views (sorted ``.jpg``/``.png``) and their ``cameras.npz``; None when absent.

    3D-R2N2's ``camera_mat_i`` are 3x3 pixel intrinsics (focal 149.84 px, centre 68.5 for 137 px images;
    DVR issue #64), unlike the normalised 4x4 ones of DVR's own renderings.
    """
    from bts_studio.data.shapenet.dvr_reader import IMAGE_SUFFIXES, DVRFormatError, _as_4x4, _sorted_files

    directory = object_dir / folder
    paths = _sorted_files(directory, IMAGE_SUFFIXES)
    if not paths:
        return None
    cameras = directory / "cameras.npz"
    if not cameras.is_file():
        return InputViews(paths, None, None)
    intrinsics, w2c = [], []
    with np.load(cameras) as archive:
        for view in range(len(paths)):
            for key in (f"camera_mat_{view}", f"world_mat_{view}"):
                if key not in archive.files:
                    raise DVRFormatError(f"{cameras}: no {key} for the {len(paths)} images of {directory}")
            k = np.asarray(archive[f"camera_mat_{view}"], dtype=np.float64)[:3, :3]
            if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
                raise DVRFormatError(f"{cameras}: camera_mat_{view} must hold finite positive focal lengths")
            intrinsics.append(k)
            w2c.append(_as_4x4(archive[f"world_mat_{view}"], cameras, f"world_mat_{view}"))
    return InputViews(paths, np.stack(intrinsics), np.stack(w2c))
