"""The ground-truth sidecar next to a synthetic KITTI-360 folder (``<root>/bts_gt/``; real KITTI-360 lacks it).

Layout::

    bts_gt/info.json                                   generator settings (seed, scale, frames, version)
    bts_gt/<seq>/scene.json                            the scene's primitives (exact occupancy)
    bts_gt/<seq>/depth/image_0{0,1}/%010d.npy          float32 [H, W] z-depth of each rectified image pixel
                                                       centre, metres (``inf`` where the ray sees sky)

Depth is z-depth along the rectified camera's optical axis (docs/conventions.md, "Depth"), at the written
image resolution; the ray of pixel ``(i, j)`` passes through its centre.
"""

import json
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np

from bts_studio.data.kitti360.reader import sequence_name
from bts_studio.data.synthetic.primitives import Scene

GROUND_TRUTH_DIR = "bts_gt"


def ground_truth_dir(root: Union[str, Path], sequence: Union[str, int]) -> Path:
    name = sequence_name(sequence) if isinstance(sequence, int) else sequence
    return Path(root) / GROUND_TRUTH_DIR / name


def scene_path(root: Union[str, Path], sequence: Union[str, int]) -> Path:
    return ground_truth_dir(root, sequence) / "scene.json"


def depth_path(root: Union[str, Path], sequence: Union[str, int], camera: int, frame: int) -> Path:
    if camera not in (0, 1):
        raise ValueError(f"ground-truth depth exists for the perspective cameras 0 and 1, got {camera}")
    return ground_truth_dir(root, sequence) / "depth" / f"image_{camera:02d}" / f"{frame:010d}.npy"


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path}: ground truth not found. Only data made by `bts-studio synth-kitti360` has the {GROUND_TRUTH_DIR}/ "
        "sidecar; real KITTI-360 does not."
    )


def load_ground_truth_scene(root: Union[str, Path], sequence: Union[str, int]) -> Scene:
    """The exact scene of a synthetic sequence; ``scene.occupied(points_world)`` answers exactly.

    Args:
        root: the synthetic KITTI-360 folder.
        sequence: sequence folder name or index.
    """
    path = scene_path(root, sequence)
    if not path.is_file():
        raise _missing(path)
    return Scene.load(path)


def load_ground_truth_depth(root: Union[str, Path], sequence: Union[str, int], camera: int, frame: int) -> np.ndarray:
    """float32 ``[H, W]`` z-depth of a rectified perspective image (``inf`` = sky)."""
    path = depth_path(root, sequence, camera, frame)
    if not path.is_file():
        raise _missing(path)
    return np.load(path)


def load_generator_info(root: Union[str, Path]) -> Dict[str, Any]:
    """The settings the synthetic folder was generated with (``bts_gt/info.json``)."""
    path = Path(root) / GROUND_TRUTH_DIR / "info.json"
    if not path.is_file():
        raise _missing(path)
    return json.loads(path.read_text())
