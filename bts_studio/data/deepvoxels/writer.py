"""Writer of the DeepVoxels scene layout (``reader.py`` describes it): one split folder of one scene per call.

The intrinsics go into the train folder only, where the official loaders (DeepVoxels' ``dataio.py``, NeRF's
``load_deepvoxels.py``) read them; poses are one line of 16 numbers, as SRN's renderer writes them.
"""

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from bts_studio.data.shapenet.srn_writer import format_pose


def format_intrinsics(
    focal: float,
    cx: float,
    cy: float,
    grid_barycentre: Tuple[float, float, float],
    near_plane: float,
    scale: float,
    height: int,
    width: int,
) -> str:
    """The five lines of a DeepVoxels ``intrinsics.txt`` (no world2cam line)."""
    x, y, z = grid_barycentre
    return f"{focal!r} {cx!r} {cy!r}\n{x!r} {y!r} {z!r}\n{near_plane!r}\n{scale!r}\n{height} {width}\n"


def write_split(
    split_dir: Path,
    images: np.ndarray,
    c2w_opencv: np.ndarray,
    first_view: int = 0,
    intrinsics_text: Optional[str] = None,
) -> None:
    """Write views into ``<root>/<split>/<scene>``; call repeatedly with ``first_view`` to write in chunks.

    Args:
        split_dir: the scene folder of one split; created if missing.
        images: ``[V, H, W, 3]`` uint8.
        c2w_opencv: ``[V, 4, 4]`` camera-to-world poses, OpenCV axes.
        first_view: file number of ``images[0]`` (files are ``%06d.png`` / ``%06d.txt``).
        intrinsics_text: written to ``intrinsics.txt`` when given (:func:`format_intrinsics`).
    """
    assert images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8, "images: [V, H, W, 3] uint8"
    assert c2w_opencv.shape == (images.shape[0], 4, 4), "one 4x4 pose per image"
    (split_dir / "rgb").mkdir(parents=True, exist_ok=True)
    (split_dir / "pose").mkdir(parents=True, exist_ok=True)
    if intrinsics_text is not None:
        (split_dir / "intrinsics.txt").write_text(intrinsics_text)
    for offset, (image, pose) in enumerate(zip(images, c2w_opencv, strict=True)):
        view = first_view + offset
        Image.fromarray(image).save(split_dir / "rgb" / f"{view:06d}.png", compress_level=1)
        (split_dir / "pose" / f"{view:06d}.txt").write_text(format_pose(pose))
