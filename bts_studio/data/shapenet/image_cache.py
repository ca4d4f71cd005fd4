"""Resized copies of dataset images, cached on disk so a dataparser can serve another resolution.

nerfstudio loads ``DataparserOutputs.image_filenames`` as they are, so a parser that serves images at
a size other than the stored one points at resized copies. They are written once (atomically) under a
cache folder keyed by source path, modification time and size, never next to the user's data.
"""

import hashlib
import os
from pathlib import Path

from PIL import Image


def resized_image_path(source: Path, height: int, width: int, cache_dir: Path) -> Path:
    """Path of ``source`` resized to ``height x width`` with area averaging (SRN uses OpenCV INTER_AREA)."""
    source = source.resolve()
    stat = source.stat()
    key = hashlib.sha1(f"{source}|{stat.st_mtime_ns}|{stat.st_size}|{height}x{width}".encode()).hexdigest()
    target = cache_dir / key[:2] / f"{key}{source.suffix.lower()}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        resized = image.resize((width, height), resample=Image.Resampling.BOX)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp{source.suffix.lower()}")
    resized.save(temporary)
    os.replace(temporary, target)
    return target
