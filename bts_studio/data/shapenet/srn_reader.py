"""Reader of SRN's ShapeNet layout: split folders, instance folders, poses and ``intrinsics.txt``.

Framework-free (numpy + PIL). Every malformed input raises :class:`SRNFormatError` naming the file and
what was expected. Format and conventions: ``srn_writer.py`` and docs/conventions.md ("ShapeNet").
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from bts_studio.data.checks import UserError, check_pixel_intrinsics, check_rigid, nested_root_hint, verify_image_file

SPLIT_FOLDER = re.compile(r"^(?P<cls>.+?)_(?P<split>train_val|train_test|train|val|test)$")
"""Split folder names: pixelNeRF's ``<class>_train|val|test`` and SRN's ``<class>_train_val|train_test``."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class SRNFormatError(UserError):
    """A file or folder does not follow the SRN ShapeNet layout."""


@dataclass(frozen=True)
class SRNIntrinsics:
    """The parsed ``intrinsics.txt``: pixel intrinsics and the resolution they refer to (line 4)."""

    focal: float
    cx: float
    cy: float
    height: int
    width: int

    def rescaled(self, height: int, width: int) -> "SRNIntrinsics":
        """Intrinsics for images of ``height x width``: SRN's rule scales f/cx/cy by size / line-4 size.

        This also repairs the original ``cars_train`` release, whose intrinsics describe 512 px images
        although its PNGs are 128 px (EG3D issue #87). fx uses the width ratio, fy the height ratio; both
        are equal for the square ShapeNet renderings, where this returns a single focal length.
        """
        scale_x, scale_y = width / self.width, height / self.height
        if abs(scale_x - scale_y) > 0.01 * max(scale_x, scale_y):
            raise SRNFormatError(
                f"images of {height}x{width} do not have the aspect ratio of the {self.height}x{self.width} "
                "resolution in intrinsics.txt; SRN's single focal length cannot describe them"
            )
        return SRNIntrinsics(self.focal * scale_y, self.cx * scale_x, self.cy * scale_y, height, width)


@dataclass(frozen=True)
class SRNInstance:
    """One instance folder: its views, in sorted file order (the view index is the position)."""

    path: Path
    image_paths: List[Path]
    poses_opencv: np.ndarray
    """``[V, 4, 4]`` float64 camera-to-world, OpenCV axes."""
    intrinsics: SRNIntrinsics
    """Already rescaled to the actual size of the images."""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num_views(self) -> int:
        return len(self.image_paths)


def read_intrinsics(path: Path) -> SRNIntrinsics:
    """Parse an SRN ``intrinsics.txt`` (4 lines, optional 5th "world2cam" flag that SRN never uses)."""
    if not path.is_file():
        raise SRNFormatError(f"missing {path}: every SRN instance folder needs an intrinsics.txt")
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise SRNFormatError(f"{path}: cannot be read as text ({error})") from error
    if len(lines) >= 5 and len(lines[3]) == 1 and len(lines[4]) == 2:
        raise SRNFormatError(
            f"{path} is in DeepVoxels' five-line format (near plane on line 3, scale on line 4, 'H W' on line 5); "
            "SRN's intrinsics.txt has four lines: 'f cx cy 0.', '0. 0. 0.', '1.', 'H W'. Use the deepvoxels-data "
            "dataparser for DeepVoxels scenes"
        )
    try:
        if len(lines) < 4:
            raise ValueError(f"{len(lines)} non-empty lines")
        focal, cx, cy = (float(value) for value in lines[0][:3])
        height, width = (int(float(value)) for value in lines[3][:2])
        if len(lines[0]) < 3 or len(lines[3]) != 2:
            raise ValueError("short line")
    except ValueError as error:
        raise SRNFormatError(
            f"cannot parse {path} ({error}); expected the lines 'f cx cy 0.', '0. 0. 0.', '1.', 'H W'"
        ) from error
    if height <= 0 or width <= 0:
        raise SRNFormatError(f"{path}: the resolution on line 4 must be positive, got {height}x{width}")
    # SRN puts pixel j at coordinate j, nerfstudio at j + 0.5: the half pixel keeps the image-centre check fair.
    check_pixel_intrinsics(
        focal,
        focal,
        cx + 0.5,
        cy + 0.5,
        height,
        width,
        f"{path}: line 1 'f cx cy'",
        "Expected SRN's 'f cx cy 0.' in pixels of the line-4 resolution.",
        SRNFormatError,
    )
    return SRNIntrinsics(focal, cx, cy, height, width)


def read_pose(path: Path) -> np.ndarray:
    """A ``pose/*.txt`` file: 16 numbers (one line, or four lines of four) -> 4x4 float64 camera-to-world."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SRNFormatError(f"{path}: not a list of numbers ({error})") from error
    if values.size != 16:
        raise SRNFormatError(f"{path}: expected 16 numbers (a 4x4 camera-to-world matrix), found {values.size}")
    if not np.isfinite(values).all():
        raise SRNFormatError(f"{path}: the pose contains NaN or infinite values")
    check_rigid(
        values.reshape(4, 4),
        str(path),
        "Expected a rigid OpenCV camera-to-world matrix [[R, t], [0, 1]].",
        SRNFormatError,
    )
    return values.reshape(4, 4)


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image, reading only its header and checking it is complete (not truncated)."""
    _, height, width = verify_image_file(path, "a PNG or JPEG view", SRNFormatError)
    return height, width


def _sorted_files(folder: Path, suffixes: Sequence[str]) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in suffixes)


def instance_files(instance_dir: Path) -> Tuple[List[Path], List[Path]]:
    """The layout of one instance folder, without reading any file: sorted ``rgb/`` images and their ``pose/``
    files.

    Raises:
        SRNFormatError: ``intrinsics.txt`` or the images are missing, or images and poses do not pair by name.
    """
    intrinsics_path = instance_dir / "intrinsics.txt"
    if not intrinsics_path.is_file():
        raise SRNFormatError(f"missing {intrinsics_path}: every SRN instance folder needs an intrinsics.txt")
    image_paths = _sorted_files(instance_dir / "rgb", IMAGE_SUFFIXES)
    pose_paths = _sorted_files(instance_dir / "pose", (".txt",))
    if not image_paths:
        raise SRNFormatError(f"{instance_dir / 'rgb'}: no images (.png/.jpg) found")
    if len(image_paths) != len(pose_paths):
        raise SRNFormatError(
            f"{instance_dir}: {len(image_paths)} images in rgb/ but {len(pose_paths)} pose files in pose/; "
            "every view needs exactly one of each"
        )
    for image_path, pose_path in zip(image_paths, pose_paths, strict=True):
        if image_path.stem != pose_path.stem:
            raise SRNFormatError(f"{instance_dir}: image {image_path.name} is paired with pose {pose_path.name}")
    return image_paths, pose_paths


def read_instance(instance_dir: Path) -> SRNInstance:
    """Read one instance folder: sorted ``rgb/`` images, the matching ``pose/`` files and the intrinsics."""
    image_paths, pose_paths = instance_files(instance_dir)
    intrinsics = read_intrinsics(instance_dir / "intrinsics.txt")
    poses = np.stack([read_pose(path) for path in pose_paths])
    height, width = image_size(image_paths[0])
    return SRNInstance(instance_dir, image_paths, poses, intrinsics.rescaled(height, width))


def holds_split_folders(path: Path) -> bool:
    """Whether ``path`` is a class root: it holds split folders (:data:`SPLIT_FOLDER`)."""
    return any(child.is_dir() and SPLIT_FOLDER.match(child.name) for child in path.iterdir())


def class_root_hint(folder: Path) -> str:
    """The "pass this folder instead" part of an error about ``folder`` (empty when no class root is near)."""
    if holds_split_folders(folder):
        return f"; {folder} is a class root (it holds split folders): pass it as --data"
    return nested_root_hint(folder, holds_split_folders)


def is_instance_dir(path: Path) -> bool:
    """Whether ``path`` looks like an SRN instance folder (it holds intrinsics.txt or rgb/)."""
    return (path / "intrinsics.txt").is_file() or (path / "rgb").is_dir()


def list_instance_dirs(split_dir: Path) -> List[Path]:
    """Instance folders of a split, sorted by name (SRN's instance order).

    pixelNeRF's ``chairs_train`` nests its instances one level deeper (``chairs_train/chairs_2.0_train``);
    a split folder whose only child folder holds the instances is descended into.
    """
    if not split_dir.is_dir():
        raise SRNFormatError(f"split folder {split_dir} does not exist")
    children = sorted(path for path in split_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
    instances = [path for path in children if is_instance_dir(path)]
    if not instances and len(children) == 1:
        return list_instance_dirs(children[0])
    if not instances:
        hint = class_root_hint(split_dir)
        raise SRNFormatError(
            f"empty split: {split_dir} has no instance folders (expected <instance>/rgb, pose, intrinsics.txt){hint}"
        )
    return instances


def select_instances(
    instance_dirs: List[Path], names: Optional[Sequence[str]], max_count: Optional[int], split_dir: Path
) -> List[Path]:
    """Keep the named instances (in sorted order) and/or the first ``max_count`` of them."""
    if names:
        by_name = {path.name: path for path in instance_dirs}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise SRNFormatError(f"{split_dir}: no instance folder named {', '.join(missing)}")
        instance_dirs = [path for path in instance_dirs if path.name in set(names)]
    if max_count is not None:
        instance_dirs = instance_dirs[:max_count]
    if not instance_dirs:
        raise SRNFormatError(f"empty split: no instance of {split_dir} is left after the instance filter")
    return instance_dirs


def linspace_subsample(num_views: int, max_views: int) -> np.ndarray:
    """View indices SRN keeps when an instance has more than ``max_views`` views (``max_views < 0``: all)."""
    if max_views < 0 or num_views <= max_views:
        return np.arange(num_views)
    return np.linspace(0, num_views - 1, num=max_views, dtype=np.int64)
