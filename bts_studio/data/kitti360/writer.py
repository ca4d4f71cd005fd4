"""Writers of the KITTI-360 on-disk files (the readers are in :mod:`bts_studio.data.kitti360.reader`).

The text layouts follow the official files: ``key: values`` lines in ``perspective.txt`` and
``calib_cam_to_pose.txt``, one bare 3x4 in ``calib_cam_to_velo.txt``, OpenCV YAML (``%YAML:1.0``) for
the MEI fisheyes, ``frame r11 .. t3`` rows in ``poses.txt`` and ``frame m11 .. m44`` in
``cam0_to_world.txt``. Numbers are written with more digits than the originals so that what a reader
parses is, to float precision, what the generator rendered with.
"""

import datetime
from pathlib import Path
from typing import Iterable, List

import numpy as np

from bts_studio.data.kitti360.reader import MeiFisheye
from bts_studio.data.synthetic.rig import FULL_PERSPECTIVE_SIZE, Rig


def _numbers(values: Iterable[float], style: str) -> str:
    return " ".join(format(float(v), style) for v in values)


def write_perspective_calibration(path: Path, rig: Rig) -> None:
    """``calibration/perspective.txt`` with the official keys (unrectified entries are informative only)."""
    width, height = rig.perspective_size
    scale = width / FULL_PERSPECTIVE_SIZE[0]
    lines = ["calib_time: 28-May-2013 08:00:00", "corner_dist: 9.950000e-02"]
    for camera in (0, 1):
        projection = rig.projection[camera]
        K = projection[:, :3]
        translation = [projection[0, 3] / projection[0, 0], 0.0, 0.0]
        lines += [
            f"S_{camera:02d}: {_numbers([round(1392 * scale), round(512 * scale)], '.6e')}",
            f"K_{camera:02d}: {_numbers(K.flatten(), '.12e')}",
            f"D_{camera:02d}: {_numbers([0.0] * 5, '.6e')}",
            f"R_{camera:02d}: {_numbers(np.eye(3).flatten(), '.6e')}",
            f"T_{camera:02d}: {_numbers(translation, '.12e')}",
            f"S_rect_{camera:02d}: {_numbers([width, height], '.6e')}",
            f"R_rect_{camera:02d}: {_numbers(rig.rect_rotation[camera].flatten(), '.12e')}",
            f"P_rect_{camera:02d}: {_numbers(projection.flatten(), '.12e')}",
        ]
    path.write_text("\n".join(lines) + "\n")


def write_cam_to_pose(path: Path, rig: Rig) -> None:
    lines = [f"image_{camera:02d}: {_numbers(rig.cam_to_pose[camera][:3].flatten(), '.10f')}" for camera in range(4)]
    path.write_text("\n".join(lines) + "\n")


def write_cam_to_velo(path: Path, rig: Rig) -> None:
    path.write_text(_numbers(rig.cam_to_velo[:3].flatten(), ".10f") + "\n")


def write_mei_fisheye(path: Path, camera: int, fisheye: MeiFisheye) -> None:
    """OpenCV YAML as OpenCV's FileStorage writes it (the devkit skips the ``%YAML:1.0`` line)."""

    def number(value: float) -> str:
        return format(float(value), ".16e")

    path.write_text(
        "%YAML:1.0\n---\n"
        "model_type: MEI\n"
        f"camera_name: image_{camera:02d}\n"
        f"image_width: {fisheye.width}\n"
        f"image_height: {fisheye.height}\n"
        "mirror_parameters:\n"
        f"   xi: {number(fisheye.xi)}\n"
        "distortion_parameters:\n"
        f"   k1: {number(fisheye.k1)}\n"
        f"   k2: {number(fisheye.k2)}\n"
        f"   p1: {number(fisheye.p1)}\n"
        f"   p2: {number(fisheye.p2)}\n"
        "projection_parameters:\n"
        f"   gamma1: {number(fisheye.gamma1)}\n"
        f"   gamma2: {number(fisheye.gamma2)}\n"
        f"   u0: {number(fisheye.u0)}\n"
        f"   v0: {number(fisheye.v0)}\n"
    )


def write_calibration(folder: Path, rig: Rig) -> None:
    """All of ``calibration/``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_perspective_calibration(folder / "perspective.txt", rig)
    write_cam_to_pose(folder / "calib_cam_to_pose.txt", rig)
    write_cam_to_velo(folder / "calib_cam_to_velo.txt", rig)
    for camera, fisheye in rig.fisheye.items():
        write_mei_fisheye(folder / f"image_{camera:02d}.yaml", camera, fisheye)


def write_poses(path: Path, frame_ids: np.ndarray, poses: np.ndarray) -> None:
    """``poses.txt``: frame id + the top 3x4 of each pose -> world."""
    rows = zip(frame_ids, poses, strict=True)
    lines = [f"{int(frame)} {_numbers(pose[:3].flatten(), '.10f')}" for frame, pose in rows]
    path.write_text("\n".join(lines) + "\n")


def write_cam0_to_world(path: Path, frame_ids: np.ndarray, matrices: np.ndarray) -> None:
    """``cam0_to_world.txt``: frame id + the full 4x4 rectified camera 0 -> world."""
    rows = zip(frame_ids, matrices, strict=True)
    lines = [f"{int(frame)} {_numbers(matrix.flatten(), '.10f')}" for frame, matrix in rows]
    path.write_text("\n".join(lines) + "\n")


def frame_timestamps(start: datetime.datetime, frames: int, rng: np.random.Generator, offset_ns: int = 0) -> List[str]:
    """10 Hz timestamps ``YYYY-MM-DD HH:MM:SS.nnnnnnnnn`` with sub-millisecond jitter, as KITTI-360 writes them."""
    base_ns = int(start.timestamp() * 1e9) + offset_ns
    stamps = []
    for frame in range(frames):
        ns = base_ns + frame * 100_000_000 + int(rng.integers(-300_000, 300_000))
        seconds, rest = divmod(ns, 1_000_000_000)
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
        stamps.append(f"{moment:%Y-%m-%d %H:%M:%S}.{rest:09d}")
    return stamps


def write_timestamps(path: Path, stamps: List[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(stamps) + "\n")


def write_png(path: Path, rgb: np.ndarray) -> None:
    """uint8 ``[H, W, 3]`` -> PNG (fast compression: generated noise does not compress well anyway)."""
    from PIL import Image

    Image.fromarray(rgb).save(path, compress_level=1)


def write_velodyne(path: Path, points: np.ndarray) -> None:
    """float32 ``[N, 4]`` (x, y, z, intensity) -> little-endian binary, 16 bytes per point."""
    assert points.ndim == 2 and points.shape[1] == 4
    points.astype("<f4").tofile(path)


def write_depth(path: Path, depth: np.ndarray) -> None:
    np.save(path, depth.astype(np.float32))
