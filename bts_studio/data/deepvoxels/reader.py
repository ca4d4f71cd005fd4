"""Reader of the DeepVoxels scene layout (Sitzmann et al., CVPR 2019; the released synthetic objects).

    <root>/train/<scene>/rgb/*.png, pose/*.txt, intrinsics.txt
    <root>/validation/<scene>/rgb/*.png, pose/*.txt
    <root>/test/<scene>/rgb/*.png, pose/*.txt

``pose/*.txt``: camera-to-world, OpenCV axes, 16 numbers (one line, or four lines of four), the same files as SRN's.
``intrinsics.txt`` has FIVE lines (``util.parse_intrinsics`` of the official code), unlike SRN's four:

    f cx cy              pixels at the resolution of line 5 (further numbers ignored)
    x y z                grid barycentre: world position of the voxel grid's centre
    near_plane           camera depth of the first frustum plane; 0 means the default sqrt(3)/2
    scale                world size of the whole grid (voxel size = scale / grid_dim)
    H W                  the resolution the intrinsics refer to
    [world2cam]          optional flag, parsed and unused (as in the official code)

A file in SRN's four-line format (``H W`` on line 4) is rejected with a message saying so. Framework-free (numpy +
PIL); every malformed input raises :class:`DeepVoxelsFormatError` naming the file and what was expected.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from bts_studio.data.checks import UserError, check_pixel_intrinsics, nested_root_hint
from bts_studio.data.shapenet.srn_reader import IMAGE_SUFFIXES, SRNFormatError, image_size, read_pose

SPLITS = ("train", "validation", "test")
"""Split folder names of the released data."""

DEFAULT_NEAR_PLANE = math.sqrt(3.0) / 2.0
"""The near plane a ``0`` on line 3 stands for (``run_deepvoxels.py``)."""


class DeepVoxelsFormatError(UserError):
    """A file or folder does not follow the DeepVoxels scene layout."""


@dataclass(frozen=True)
class DeepVoxelsIntrinsics:
    """The parsed five-line ``intrinsics.txt``."""

    focal: float
    cx: float
    cy: float
    grid_barycentre: Tuple[float, float, float]
    near_plane: float
    """Already resolved: a 0 in the file becomes :data:`DEFAULT_NEAR_PLANE`."""
    scale: float
    height: int
    width: int

    def rescaled(self, height: int, width: int) -> "DeepVoxelsIntrinsics":
        """Intrinsics for images of ``height x width`` (the official rule: f and cy by the height ratio, cx by the
        width ratio). Raises :class:`DeepVoxelsFormatError` when the aspect ratio differs."""
        scale_x, scale_y = width / self.width, height / self.height
        if abs(scale_x - scale_y) > 0.01 * max(scale_x, scale_y):
            raise DeepVoxelsFormatError(
                f"images of {height}x{width} do not have the aspect ratio of the {self.height}x{self.width} "
                "resolution in intrinsics.txt"
            )
        return DeepVoxelsIntrinsics(
            self.focal * scale_y,
            self.cx * scale_x,
            self.cy * scale_y,
            self.grid_barycentre,
            self.near_plane,
            self.scale,
            height,
            width,
        )


EXPECTED_LINES = "'f cx cy', 'x y z' (grid barycentre), 'near_plane' (0: sqrt(3)/2), 'scale', 'H W' [, 'world2cam']"


def read_intrinsics(path: Path) -> DeepVoxelsIntrinsics:
    """Parse a DeepVoxels ``intrinsics.txt`` (see the module docstring).

    Raises:
        DeepVoxelsFormatError: missing file, SRN's four-line format, or numbers that do not parse.
    """
    if not path.is_file():
        raise DeepVoxelsFormatError(f"missing {path}: a DeepVoxels scene needs intrinsics.txt in its train folder")
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DeepVoxelsFormatError(f"{path}: cannot be read as text ({error}); expected {EXPECTED_LINES}") from error
    if len(lines) >= 4 and len(lines[3]) == 2 and (len(lines) == 4 or len(lines[4]) == 1):
        raise DeepVoxelsFormatError(
            f"{path} is in SRN's four-line format ('f cx cy 0.', barycentre, scale, 'H W' on line 4); DeepVoxels' "
            f"intrinsics.txt has five lines: {EXPECTED_LINES}. Use the shapenet-srn-data dataparser for SRN data, "
            "or insert the near-plane line"
        )
    try:
        if len(lines) < 5:
            raise ValueError(f"{len(lines)} non-empty lines")
        if len(lines[0]) < 3 or len(lines[1]) != 3 or len(lines[2]) != 1 or len(lines[3]) != 1 or len(lines[4]) != 2:
            raise ValueError("a line has the wrong count of numbers")
        focal, cx, cy = (float(value) for value in lines[0][:3])
        bx, by, bz = (float(value) for value in lines[1])
        near_plane = float(lines[2][0])
        scale = float(lines[3][0])
        height, width = (int(float(value)) for value in lines[4])
    except ValueError as error:
        raise DeepVoxelsFormatError(f"cannot parse {path} ({error}); expected the lines {EXPECTED_LINES}") from error
    # Finite, positive focal length and a principal point inside the image (NaN fails every comparison, so the
    # shared check tests finiteness explicitly).
    check_pixel_intrinsics(
        focal,
        focal,
        cx,
        cy,
        height if height > 0 else None,
        width if width > 0 else None,
        f"{path}: line 1 'f cx cy'",
        "Expected pixels at the resolution on line 5.",
        DeepVoxelsFormatError,
    )
    if not (height > 0 and width > 0 and math.isfinite(scale) and scale > 0 and math.isfinite(near_plane)) or (
        near_plane < 0
    ):
        raise DeepVoxelsFormatError(
            f"{path}: need f, scale, H, W > 0 and near_plane >= 0; got f={focal}, scale={scale}, {height}x{width}, "
            f"near_plane={near_plane}"
        )
    near_plane = near_plane if near_plane > 0 else DEFAULT_NEAR_PLANE
    return DeepVoxelsIntrinsics(focal, cx, cy, (bx, by, bz), near_plane, scale, height, width)


@dataclass(frozen=True)
class DeepVoxelsSplit:
    """The views of one split of one scene, in sorted file order."""

    path: Path
    image_paths: List[Path]
    poses_opencv: np.ndarray
    """``[V, 4, 4]`` float64 camera-to-world, OpenCV axes."""
    height: int
    width: int


def _sorted_files(folder: Path, suffixes: Tuple[str, ...]) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in suffixes)


def read_split(split_dir: Path) -> DeepVoxelsSplit:
    """Read ``rgb/`` and ``pose/`` of one split folder; images and poses are paired by file stem.

    Raises:
        DeepVoxelsFormatError: missing folders, unpaired files, bad poses, or images of different sizes.
    """
    if not split_dir.is_dir():
        raise DeepVoxelsFormatError(f"{split_dir} does not exist (expected <root>/<split>/<scene> with rgb/ and pose/)")
    image_paths = _sorted_files(split_dir / "rgb", IMAGE_SUFFIXES)
    pose_paths = _sorted_files(split_dir / "pose", (".txt",))
    if not image_paths:
        raise DeepVoxelsFormatError(f"{split_dir / 'rgb'}: no images (.png/.jpg) found")
    if [p.stem for p in image_paths] != [p.stem for p in pose_paths]:
        raise DeepVoxelsFormatError(
            f"{split_dir}: the {len(image_paths)} images in rgb/ and {len(pose_paths)} files in pose/ do not pair up "
            "by name; every view needs rgb/<name>.png and pose/<name>.txt"
        )
    try:
        poses = np.stack([read_pose(path) for path in pose_paths])
    except SRNFormatError as error:
        raise DeepVoxelsFormatError(str(error)) from error
    try:
        sizes = {image_size(path) for path in (image_paths[0], image_paths[-1])}
    except SRNFormatError as error:
        raise DeepVoxelsFormatError(str(error)) from error
    if len(sizes) != 1:
        raise DeepVoxelsFormatError(f"{split_dir / 'rgb'}: images of different sizes {sorted(sizes)}")
    height, width = sizes.pop()
    return DeepVoxelsSplit(split_dir, image_paths, poses, height, width)


def scene_folders(data: Path, scene: str) -> Tuple[Path, str]:
    """``(root, scene name)`` for ``data`` = a root holding ``train/``, or a ``<root>/<split>/<scene>`` folder.

    Raises:
        DeepVoxelsFormatError: no train folder, or several scenes and none named.
    """
    if not data.exists():
        raise DeepVoxelsFormatError(f"{data} does not exist (expected a DeepVoxels root or <root>/train/<scene>)")
    if (data / "rgb").is_dir() or (data / "pose").is_dir():
        return data.parent.parent, data.name
    train = data / "train"
    if not train.is_dir():
        hint = nested_root_hint(data, lambda path: (path / "train").is_dir())
        raise DeepVoxelsFormatError(
            f"{data}: no train/ folder (expected <root>/train/<scene>/rgb, pose, intrinsics.txt){hint}"
        )
    scenes = sorted(path.name for path in train.iterdir() if path.is_dir())
    if scene:
        if scene not in scenes:
            raise DeepVoxelsFormatError(f"{train}: no scene {scene!r} (found {', '.join(scenes) or 'none'})")
        return data, scene
    if len(scenes) != 1:
        raise DeepVoxelsFormatError(f"{train} holds scenes {scenes}; choose one with --scene (or point --data at it)")
    return data, scenes[0]
