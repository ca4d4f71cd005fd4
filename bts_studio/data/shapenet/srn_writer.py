"""Writer of SRN's ShapeNet layout (``srn_cars`` / ``srn_chairs``): one folder per instance.

    <split>/<instance>/rgb/000000.png    RGB, white background
    <split>/<instance>/pose/000000.txt   one line, 16 floats: row-major 4x4 camera-to-world, OpenCV axes
    <split>/<instance>/intrinsics.txt    "f cx cy 0." / "0. 0. 0." / "1." / "H W"

Split folders use the pixelNeRF release naming ``<class>_train``, ``<class>_val``, ``<class>_test``
(docs/conventions.md, "ShapeNet (SRN and DVR)").
"""

from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_SUFFIXES = ("train", "val", "test")
"""pixelNeRF's split folder suffixes, written as ``<class>_<suffix>``."""


def srn_focal_length(resolution: int) -> float:
    """SRN's renderer focal length in pixels: ``525/512 * resolution`` (131.25 at 128 px)."""
    return 525.0 / 512.0 * resolution


def format_intrinsics(focal: float, cx: float, cy: float, height: int, width: int) -> str:
    """The four lines of an SRN ``intrinsics.txt``: focal/principal point, barycenter, scale, resolution."""
    return f"{focal!r} {cx!r} {cy!r} 0.\n0. 0. 0.\n1.\n{height} {width}\n"


def format_pose(c2w_opencv: np.ndarray) -> str:
    """One line of 16 space-separated floats (row-major 4x4 camera-to-world), as SRN's renderer writes it."""
    assert c2w_opencv.shape == (4, 4), f"pose must be 4x4, got {c2w_opencv.shape}"
    return " ".join(repr(float(value)) for value in c2w_opencv.reshape(-1)) + "\n"


def write_srn_instance(
    instance_dir: Path,
    images: np.ndarray,
    c2w_opencv: np.ndarray,
    focal: float,
    cx: float,
    cy: float,
    first_view: int = 0,
) -> None:
    """Write views of one instance; ``intrinsics.txt`` is (re)written with every call.

    Args:
        instance_dir: ``<split>/<instance>``; created if missing.
        images: ``[V, H, W, 3]`` uint8.
        c2w_opencv: ``[V, 4, 4]`` camera-to-world poses, OpenCV axes.
        focal, cx, cy: pixel intrinsics for the stored resolution (SRN: cx = W/2, cy = H/2).
        first_view: file number of ``images[0]``, so one instance can be written in chunks.
    """
    assert images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8, "images: [V, H, W, 3] uint8"
    assert c2w_opencv.shape == (images.shape[0], 4, 4), "one 4x4 pose per image"
    rgb_dir, pose_dir = instance_dir / "rgb", instance_dir / "pose"
    rgb_dir.mkdir(parents=True, exist_ok=True)
    pose_dir.mkdir(parents=True, exist_ok=True)
    height, width = images.shape[1:3]
    (instance_dir / "intrinsics.txt").write_text(format_intrinsics(focal, cx, cy, height, width))
    for offset, (image, pose) in enumerate(zip(images, c2w_opencv, strict=True)):
        view = first_view + offset
        # compress_level 1: the demo set has ~10^4 images and zlib dominates the generation time otherwise.
        Image.fromarray(image).save(rgb_dir / f"{view:06d}.png", compress_level=1)
        (pose_dir / f"{view:06d}.txt").write_text(format_pose(pose))
