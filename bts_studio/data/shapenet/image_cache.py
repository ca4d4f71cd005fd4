"""Resized copies of dataset images, cached on disk so a dataparser can serve another resolution.

nerfstudio loads ``DataparserOutputs.image_filenames`` as they are, so a parser that serves images at
a size other than the stored one points at resized copies. They are written once (atomically) under a
cache folder keyed by source path, modification time and size, never next to the user's data, and are
verified (complete PNG of the right size) on every use and made again when they do not verify
(``bts_studio.data.checks.cached_derivative``). Sources become RGB by ``checks.RGB_RULE`` first.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from bts_studio.data.checks import cached_derivative, read_rgb_image

RESIZE_CACHE_OPTION = (
    "--resize-cache-dir (the dataparser option, e.g. 'ns-train srn ... shapenet-srn-data --resize-cache-dir DIR')"
)
"""How users move the resize cache; named in errors."""


def resized_image_path(source: Path, height: int, width: int, cache_dir: Path) -> Path:
    """Path of ``source`` resized to ``height x width`` with area averaging (SRN uses OpenCV INTER_AREA)."""

    def make(path: Path) -> np.ndarray:
        rgb = Image.fromarray(read_rgb_image(path, "a PNG or JPEG view"))
        return np.asarray(rgb.resize((width, height), resample=Image.Resampling.BOX))

    return cached_derivative(
        source, cache_dir, f"{height}x{width}", make, RESIZE_CACHE_OPTION, expected_size=(height, width)
    )
