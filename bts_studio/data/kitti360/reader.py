"""Readers for the KITTI-360 on-disk files (pure numpy), and the folder layout they live in.

Every reader checks what it reads and fails with a :class:`Kitti360FormatError` that names the file, what
was expected, and the official KITTI-360 download the file comes from, so a user with a partial download
knows what to fetch. The formats follow the official devkit (``kitti360Scripts``:
``devkits/commons/loadCalibration.py`` and ``helpers/project.py``); see docs/conventions.md,
"KITTI-360 frames", for what each transform means.

Layout (``root`` is the KITTI-360 folder)::

    calibration/perspective.txt            P_rect_0x [3, 4], R_rect_0x [3, 3], S_rect_0x [W H], ...
    calibration/calib_cam_to_pose.txt      image_00 .. image_03: unrectified camera -> IMU/GPS "pose" frame
    calibration/calib_cam_to_velo.txt      one 3x4: unrectified camera 0 -> velodyne
    calibration/image_02.yaml, image_03.yaml   MEI fisheye intrinsics (OpenCV YAML)
    data_poses/<seq>/poses.txt             frame id + 3x4 pose -> world (only these frames are usable)
    data_poses/<seq>/cam0_to_world.txt     frame id + 4x4 rectified camera 0 -> world
    data_2d_raw/<seq>/image_0{0,1}/data_rect/%010d.png    rectified perspective images
    data_2d_raw/<seq>/image_0{2,3}/data_rgb/%010d.png     fisheye images
    data_2d_raw/<seq>/image_0x/timestamps.txt
    data_3d_raw/<seq>/velodyne_points/data/%010d.bin      float32 x, y, z, intensity (velodyne frame)
    data_3d_raw/<seq>/velodyne_points/timestamps.txt
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from bts_studio.data.checks import UserError, check_pixel_intrinsics, check_rigid, first_non_rigid

PathLike = Union[str, Path]

SEQUENCE_PATTERN = "2013_05_28_drive_%04d_sync"
"""Real KITTI-360 sequence folder names, e.g. ``2013_05_28_drive_0000_sync``."""

PERSPECTIVE_CAMERAS = (0, 1)
FISHEYE_CAMERAS = (2, 3)

# Names of the official downloads (https://www.cvlibs.net/datasets/kitti-360/download.php), used in errors.
DOWNLOAD_CALIBRATION = '"calibration" (calibration.zip, "Calibrations")'
DOWNLOAD_POSES = '"data_poses" (data_poses.zip, "Vehicle Poses")'
DOWNLOAD_PERSPECTIVE = '"data_2d_raw" ("Perspective Images for Train & Val", image_00/image_01)'
DOWNLOAD_FISHEYE = '"data_2d_raw" ("Fisheye Images", image_02/image_03)'
DOWNLOAD_VELODYNE = '"data_3d_raw" ("Raw Velodyne Scans", velodyne_points)'


class Kitti360FormatError(UserError):
    """A KITTI-360 file is missing or does not have the official format."""


def _fail(path: PathLike, problem: str, download: str) -> Kitti360FormatError:
    return Kitti360FormatError(f"{path}: {problem}. It is part of the KITTI-360 download {download}.")


def _read_text(path: PathLike, download: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found", download)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise _fail(path, f"cannot be read as text ({error})", download) from error


def _parse_floats(path: PathLike, where: str, tokens: List[str], download: str) -> np.ndarray:
    try:
        return np.array([float(token) for token in tokens], dtype=np.float64)
    except ValueError as error:
        raise _fail(path, f"{where}: expected numbers, got {' '.join(tokens)[:80]!r}", download) from error


def _check_rigid(matrix: np.ndarray, path: PathLike, where: str, download: str) -> None:
    """A calibration/pose matrix must be a rigid transform (``bts_studio.data.checks.check_rigid``)."""
    check_rigid(
        matrix,
        f"{path}: {where}",
        f"Fix or re-download it; it is part of the KITTI-360 download {download}.",
        Kitti360FormatError,
    )


def _homogeneous(matrix_3x4: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix_3x4, np.array([[0.0, 0.0, 0.0, 1.0]])], axis=0)


def _read_keyed_matrices(path: PathLike, shapes: Dict[str, Tuple[int, ...]], download: str) -> Dict[str, np.ndarray]:
    """Read ``key: v1 v2 ...`` lines (the devkit's ``readVariable``); other keys in the file are ignored."""
    found: Dict[str, np.ndarray] = {}
    for line_number, line in enumerate(_read_text(path, download).splitlines(), start=1):
        key, separator, rest = line.partition(":")
        key = key.strip()
        if not separator or key not in shapes or key in found:
            continue
        values = _parse_floats(path, f"line {line_number} ({key})", rest.split(), download)
        expected = int(np.prod(shapes[key]))
        if values.size != expected:
            raise _fail(path, f"line {line_number}: {key} has {values.size} values, expected {expected}", download)
        found[key] = values.reshape(shapes[key])
    missing = [key for key in shapes if key not in found]
    if missing:
        raise _fail(path, f"missing entries {', '.join(missing)} (expected lines 'KEY: values')", download)
    return found


def read_perspective_calibration(path: PathLike) -> Dict[str, np.ndarray]:
    """Read ``calibration/perspective.txt``.

    Returns:
        ``P_rect_00``, ``P_rect_01``: ``[3, 4]`` rectified projections (OpenCV pixel convention: the centre of
        pixel (0, 0) is (0, 0)); ``R_rect_00``, ``R_rect_01``: ``[3, 3]`` rotations from the unrectified to the
        rectified camera; ``S_rect_00``, ``S_rect_01``: ``[2]`` rectified image size ``(width, height)``.
    """
    shapes: Dict[str, Tuple[int, ...]] = {}
    for camera in PERSPECTIVE_CAMERAS:
        shapes[f"P_rect_{camera:02d}"] = (3, 4)
        shapes[f"R_rect_{camera:02d}"] = (3, 3)
        shapes[f"S_rect_{camera:02d}"] = (2,)
    calibration = _read_keyed_matrices(path, shapes, DOWNLOAD_CALIBRATION)
    for camera in PERSPECTIVE_CAMERAS:
        size = calibration[f"S_rect_{camera:02d}"]
        if np.any(size <= 0) or np.any(size != np.round(size)):
            raise _fail(
                path,
                f"S_rect_{camera:02d} must be two positive integers (width height), got {size}",
                DOWNLOAD_CALIBRATION,
            )
        _check_rigid(calibration[f"R_rect_{camera:02d}"], path, f"R_rect_{camera:02d}", DOWNLOAD_CALIBRATION)
        projection = calibration[f"P_rect_{camera:02d}"]
        # P_rect is in OpenCV pixels (pixel centre (0, 0) at 0); + 0.5 gives nerfstudio's convention.
        check_pixel_intrinsics(
            projection[0, 0],
            projection[1, 1],
            projection[0, 2] + 0.5,
            projection[1, 2] + 0.5,
            int(size[1]),
            int(size[0]),
            f"{path}: P_rect_{camera:02d}",
            f"It is part of the KITTI-360 download {DOWNLOAD_CALIBRATION}.",
            Kitti360FormatError,
        )
    return calibration


def read_cam_to_pose(path: PathLike) -> Dict[str, np.ndarray]:
    """Read ``calibration/calib_cam_to_pose.txt``: ``image_00`` .. ``image_03`` -> ``[4, 4]``.

    Each maps points from the (unrectified) camera frame to the IMU/GPS "pose" frame.
    """
    shapes: Dict[str, Tuple[int, ...]] = {f"image_{camera:02d}": (3, 4) for camera in range(4)}
    matrices = _read_keyed_matrices(path, shapes, DOWNLOAD_CALIBRATION)
    for key, value in matrices.items():
        _check_rigid(value, path, key, DOWNLOAD_CALIBRATION)
    return {key: _homogeneous(value) for key, value in matrices.items()}


def read_cam_to_velo(path: PathLike) -> np.ndarray:
    """Read ``calibration/calib_cam_to_velo.txt``: one ``[4, 4]`` from unrectified camera 0 to the velodyne."""
    tokens = _read_text(path, DOWNLOAD_CALIBRATION).split()
    values = _parse_floats(path, "contents", tokens, DOWNLOAD_CALIBRATION)
    if values.size != 12:
        raise _fail(path, f"expected 12 numbers (one 3x4 matrix), got {values.size}", DOWNLOAD_CALIBRATION)
    _check_rigid(values.reshape(3, 4), path, "the 3x4 camera-to-velodyne matrix", DOWNLOAD_CALIBRATION)
    return _homogeneous(values.reshape(3, 4))


@dataclass(frozen=True)
class MeiFisheye:
    """MEI (unified omnidirectional) fisheye intrinsics as stored in ``image_02.yaml`` / ``image_03.yaml``.

    ``u0, v0, gamma1, gamma2`` are in OpenCV pixel units (the centre of pixel (0, 0) is (0, 0));
    ``bts_studio.core.fisheye.MeiParams.from_opencv`` converts them to nerfstudio units.
    """

    xi: float
    k1: float
    k2: float
    p1: float
    p2: float
    gamma1: float
    gamma2: float
    u0: float
    v0: float
    width: int
    height: int


_MEI_FIELDS = {
    "mirror_parameters": ("xi",),
    "distortion_parameters": ("k1", "k2", "p1", "p2"),
    "projection_parameters": ("gamma1", "gamma2", "u0", "v0"),
}


def read_mei_fisheye(path: PathLike) -> MeiFisheye:
    """Read a KITTI-360 fisheye calibration (``calibration/image_02.yaml`` or ``image_03.yaml``).

    The file is OpenCV YAML: its first line ``%YAML:1.0`` is not valid YAML 1.1, so, like the devkit's
    ``readYAMLFile``, it is skipped and a space is added after colons that lack one before parsing.
    """
    import yaml

    text = _read_text(path, DOWNLOAD_CALIBRATION)
    lines = text.splitlines()
    if not lines or not lines[0].startswith("%YAML"):
        raise _fail(path, "expected an OpenCV YAML file whose first line is '%YAML:1.0'", DOWNLOAD_CALIBRATION)
    body = re.sub(r":([^ \n])", r": \1", "\n".join(lines[1:]))
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as error:
        raise _fail(path, f"invalid YAML ({error})", DOWNLOAD_CALIBRATION) from error
    if not isinstance(data, dict):
        raise _fail(path, "expected a YAML mapping", DOWNLOAD_CALIBRATION)
    model = data.get("model_type", "MEI")
    if model != "MEI":
        raise _fail(path, f"model_type is {model!r}, expected 'MEI'", DOWNLOAD_CALIBRATION)
    values: Dict[str, float] = {}
    for section, names in _MEI_FIELDS.items():
        group = data.get(section)
        for name in names:
            if not isinstance(group, dict) or name not in group:
                raise _fail(path, f"missing {section}.{name}", DOWNLOAD_CALIBRATION)
            try:
                values[name] = float(group[name])
            except (TypeError, ValueError) as error:
                raise _fail(path, f"{section}.{name} is not a number: {group[name]!r}", DOWNLOAD_CALIBRATION) from error
    size = {}
    for name in ("image_width", "image_height"):
        value = data.get(name)
        if not isinstance(value, (int, float)) or value <= 0 or value != int(value):
            raise _fail(path, f"{name} must be a positive integer, got {value!r}", DOWNLOAD_CALIBRATION)
        size[name] = int(value)
    check_pixel_intrinsics(
        values["gamma1"],
        values["gamma2"],
        values["u0"] + 0.5,
        values["v0"] + 0.5,
        size["image_height"],
        size["image_width"],
        f"{path}: projection_parameters",
        f"It is part of the KITTI-360 download {DOWNLOAD_CALIBRATION}.",
        Kitti360FormatError,
    )
    return MeiFisheye(width=size["image_width"], height=size["image_height"], **values)


def _read_pose_rows(path: PathLike, values_per_row: int, what: str) -> Tuple[np.ndarray, np.ndarray]:
    rows, line_numbers = [], []
    for line_number, line in enumerate(_read_text(path, DOWNLOAD_POSES).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != values_per_row + 1:
            raise _fail(
                path, f"line {line_number} has {len(tokens)} numbers, expected frame id + {what}", DOWNLOAD_POSES
            )
        rows.append(_parse_floats(path, f"line {line_number}", tokens, DOWNLOAD_POSES))
        line_numbers.append(line_number)
    if not rows:
        raise _fail(path, "no poses", DOWNLOAD_POSES)
    table = np.stack(rows)
    frame_ids = table[:, 0]
    if np.any(frame_ids != np.round(frame_ids)) or np.any(frame_ids < 0):
        raise _fail(path, "frame ids (first column) must be non-negative integers", DOWNLOAD_POSES)
    frame_ids = frame_ids.astype(np.int64)
    if np.any(np.diff(frame_ids) <= 0):
        raise _fail(path, "frame ids must be strictly increasing", DOWNLOAD_POSES)
    if not np.all(np.isfinite(table)):
        raise _fail(path, "contains NaN or infinite values", DOWNLOAD_POSES)
    shape = (3, 4) if values_per_row == 12 else (4, 4)
    bad = first_non_rigid(table[:, 1:].reshape(-1, *shape))
    if bad is not None:
        _check_rigid(
            table[bad, 1:].reshape(shape), path, f"line {line_numbers[bad]} (frame {frame_ids[bad]})", DOWNLOAD_POSES
        )
    return frame_ids, table[:, 1:]


def read_poses(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``data_poses/<seq>/poses.txt``: rows of frame id + 3x4 IMU/GPS "pose" frame -> world.

    Returns:
        ``frame_ids`` int64 ``[N]`` (strictly increasing; real sequences skip frames) and ``poses`` float64
        ``[N, 4, 4]``.
    """
    frame_ids, values = _read_pose_rows(path, 12, "a 3x4 matrix (13 numbers)")
    poses = np.tile(np.eye(4), (len(frame_ids), 1, 1))
    poses[:, :3, :] = values.reshape(-1, 3, 4)
    return frame_ids, poses


def read_cam0_to_world(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``data_poses/<seq>/cam0_to_world.txt``: frame id + 4x4 rectified camera 0 -> world.

    Returns:
        ``frame_ids`` int64 ``[N]`` and ``poses`` float64 ``[N, 4, 4]``.
    """
    frame_ids, values = _read_pose_rows(path, 16, "a 4x4 matrix (17 numbers)")
    return frame_ids, values.reshape(-1, 4, 4)


def read_velodyne(path: PathLike) -> np.ndarray:
    """Read one velodyne scan ``%010d.bin``: float32 ``[N, 4]`` = x, y, z (metres, velodyne frame), intensity."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "file not found", DOWNLOAD_VELODYNE)
    size = path.stat().st_size
    if size % 16:
        raise _fail(
            path, f"size {size} bytes is not a multiple of 16 (float32 x, y, z, intensity per point)", DOWNLOAD_VELODYNE
        )
    return np.fromfile(path, dtype="<f4").reshape(-1, 4)


def _download_for(path: PathLike) -> str:
    parts = Path(path).parts
    if "velodyne_points" in parts or "data_3d_raw" in parts:
        return DOWNLOAD_VELODYNE
    if "image_02" in parts or "image_03" in parts:
        return DOWNLOAD_FISHEYE
    return DOWNLOAD_PERSPECTIVE


def read_timestamps(path: PathLike) -> List[str]:
    """Read a ``timestamps.txt`` (one ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn`` per frame) as stripped strings."""
    download = _download_for(path)
    lines = [line.strip() for line in _read_text(path, download).splitlines()]
    stamps = [line for line in lines if line]
    if not stamps:
        raise _fail(path, "no timestamps", download)
    return stamps


def read_image(path: PathLike) -> np.ndarray:
    """Read a KITTI-360 PNG as uint8 ``[H, W, 3]`` (RGB)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    download = _download_for(path)
    if not path.is_file():
        raise _fail(path, "image not found", download)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise _fail(path, f"not a readable image ({error})", download) from error


def sequence_name(index: int) -> str:
    """``2013_05_28_drive_%04d_sync`` for a sequence index."""
    if index < 0 or index > 9999:
        raise ValueError(f"sequence index must be in [0, 9999], got {index}")
    return SEQUENCE_PATTERN % index


@dataclass(frozen=True, init=False)
class Kitti360Paths:
    """Where each KITTI-360 file of one sequence lives (nothing is checked until a reader opens it).

    Args:
        root: the KITTI-360 folder (the one holding ``calibration/``, ``data_poses/``, ``data_2d_raw/``...).
        sequence: a sequence folder name or index (``3`` -> ``2013_05_28_drive_0003_sync``).
    """

    root: Path
    sequence: str

    def __init__(self, root: PathLike, sequence: Union[str, int]):
        object.__setattr__(self, "root", Path(root))
        object.__setattr__(self, "sequence", sequence_name(sequence) if isinstance(sequence, int) else sequence)

    @property
    def calibration_dir(self) -> Path:
        return self.root / "calibration"

    @property
    def perspective_calibration(self) -> Path:
        return self.calibration_dir / "perspective.txt"

    @property
    def cam_to_pose(self) -> Path:
        return self.calibration_dir / "calib_cam_to_pose.txt"

    @property
    def cam_to_velo(self) -> Path:
        return self.calibration_dir / "calib_cam_to_velo.txt"

    def fisheye_calibration(self, camera: int) -> Path:
        """``calibration/image_02.yaml`` or ``image_03.yaml``."""
        _check_camera(camera, FISHEYE_CAMERAS)
        return self.calibration_dir / f"image_{camera:02d}.yaml"

    @property
    def poses_dir(self) -> Path:
        return self.root / "data_poses" / self.sequence

    @property
    def poses(self) -> Path:
        return self.poses_dir / "poses.txt"

    @property
    def cam0_to_world(self) -> Path:
        return self.poses_dir / "cam0_to_world.txt"

    @property
    def images_root(self) -> Path:
        """``data_2d_raw/<seq>``."""
        return self.root / "data_2d_raw" / self.sequence

    def camera_dir(self, camera: int) -> Path:
        """``data_2d_raw/<seq>/image_0x``."""
        _check_camera(camera, PERSPECTIVE_CAMERAS + FISHEYE_CAMERAS)
        return self.images_root / f"image_{camera:02d}"

    def image_dir(self, camera: int) -> Path:
        """``image_0{0,1}/data_rect`` (rectified perspective) or ``image_0{2,3}/data_rgb`` (fisheye)."""
        return self.camera_dir(camera) / ("data_rect" if camera in PERSPECTIVE_CAMERAS else "data_rgb")

    def image(self, camera: int, frame: int) -> Path:
        return self.image_dir(camera) / f"{frame:010d}.png"

    def image_timestamps(self, camera: int) -> Path:
        return self.camera_dir(camera) / "timestamps.txt"

    @property
    def velodyne_root(self) -> Path:
        """``data_3d_raw/<seq>/velodyne_points``."""
        return self.root / "data_3d_raw" / self.sequence / "velodyne_points"

    @property
    def velodyne_dir(self) -> Path:
        return self.velodyne_root / "data"

    def velodyne(self, frame: int) -> Path:
        return self.velodyne_dir / f"{frame:010d}.bin"

    @property
    def velodyne_timestamps(self) -> Path:
        return self.velodyne_root / "timestamps.txt"


def _check_camera(camera: int, allowed: Tuple[int, ...]) -> None:
    if camera not in allowed:
        raise ValueError(f"camera must be one of {allowed}, got {camera}")


def list_sequences(root: PathLike) -> List[str]:
    """Sequence folders under ``root/data_2d_raw`` (sorted), as BTS discovers them."""
    folder = Path(root) / "data_2d_raw"
    if not folder.is_dir():
        raise _fail(folder, "folder not found", DOWNLOAD_PERSPECTIVE)
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


def homogeneous_rotation(rotation: np.ndarray) -> np.ndarray:
    """``[3, 3]`` -> ``[4, 4]`` (e.g. ``R_rect`` for chaining with poses)."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    return matrix


def perspective_cam_to_world(pose: np.ndarray, cam_to_pose: np.ndarray, rect_rotation: np.ndarray) -> np.ndarray:
    """Rectified perspective camera -> world: ``pose @ cam_to_pose @ inv(R_rect)`` (the devkit's chain).

    Args:
        pose: ``[..., 4, 4]`` IMU/GPS pose -> world (a ``poses.txt`` row).
        cam_to_pose: ``[4, 4]`` unrectified camera -> pose (``calib_cam_to_pose.txt``, image_00 or image_01).
        rect_rotation: ``[3, 3]`` ``R_rect_0x`` from ``perspective.txt``.
    """
    return pose @ cam_to_pose @ np.linalg.inv(homogeneous_rotation(rect_rotation))


def fisheye_cam_to_world(pose: np.ndarray, cam_to_pose: np.ndarray) -> np.ndarray:
    """Fisheye camera -> world: ``pose @ cam_to_pose`` (fisheyes are not rectified)."""
    return pose @ cam_to_pose


def velodyne_to_world(pose: np.ndarray, cam0_to_pose: np.ndarray, cam_to_velo: np.ndarray) -> np.ndarray:
    """Velodyne -> world: ``pose @ cam0_to_pose @ inv(cam_to_velo)`` (velodyne -> unrectified camera 0 -> pose)."""
    return pose @ cam0_to_pose @ np.linalg.inv(cam_to_velo)
