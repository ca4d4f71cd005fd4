"""Cache folders of derived KITTI-360 files: resized perspective images, resampled fisheyes, lidar depth maps.

A cache folder holds files derived from originals under fixed parameters. Its manifest
(``.bts_studio_cache.json``) records those parameters; when they change, the files the folder holds are
deleted and made again. Files are written under a temporary name and renamed, so an interrupted run leaves
no half-written file. Originals are only read.

A folder that exists without a manifest was made by someone else (e.g. BTS's ``preprocess_kitti_360.py``,
which writes the same ``data_192x640`` / ``data_192x640_0x-15`` folders): its files are used as they are and
never overwritten; missing ones are added.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from jaxtyping import UInt8

from bts_studio.data.kitti360.reader import Kitti360FormatError

MANIFEST_NAME = ".bts_studio_cache.json"
CACHE_VERSION = 1
"""Bumped when the way cached files are made changes, so that old caches are rebuilt."""


@dataclass(frozen=True)
class CacheJob:
    """One derived file: ``target`` is made from ``source``."""

    source: Path
    target: Path


def prepare_cache_folder(folder: Path, key: Dict[str, Any]) -> bool:
    """Make ``folder`` ready to hold files derived under ``key``.

    Args:
        folder: the cache folder (created if missing).
        key: JSON-serialisable parameters the files depend on.

    Returns:
        True if the folder is foreign (no manifest): its files are reused and must not be overwritten.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    wanted = {"version": CACHE_VERSION, **key}
    if manifest.is_file():
        try:
            stored = json.loads(manifest.read_text())
        except (OSError, ValueError):
            stored = None
        if stored == json.loads(json.dumps(wanted)):
            return False
        # Our own folder made under other parameters: its files are stale.
        for entry in folder.iterdir():
            if entry.is_file() and entry.name != MANIFEST_NAME:
                entry.unlink()
    elif folder.is_dir() and any(entry.suffix in (".png", ".npy") for entry in folder.iterdir()):
        return True
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(manifest, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())
    return False


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{np.random.randint(1 << 30)}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def missing_jobs(jobs: Sequence[CacheJob]) -> List[CacheJob]:
    """The jobs whose target does not exist yet (one directory listing per target folder)."""
    listings: Dict[Path, set] = {}
    result = []
    for job in jobs:
        folder = job.target.parent
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        if job.target.name not in listings[folder]:
            result.append(job)
    return result


def run_jobs(jobs: Sequence[CacheJob], make: Callable[[CacheJob], None], description: str) -> None:
    """Run ``make`` for each job on a thread pool (OpenCV and numpy release the GIL) with a progress bar."""
    if not jobs:
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    workers = max(1, min(8, os.cpu_count() or 1))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress, ThreadPoolExecutor(workers) as pool:
        task = progress.add_task(description, total=len(jobs))
        for _ in pool.map(make, jobs):
            progress.advance(task)


def read_rgb(path: Path, download: str, expected_size: Optional[Tuple[int, int]] = None) -> UInt8[np.ndarray, "H W 3"]:
    """Decode an original KITTI-360 PNG.

    Args:
        path: the image.
        download: the official download it comes from (for the error message).
        expected_size: ``(height, width)`` it must have, if known.

    Returns:
        RGB uint8 image.

    Raises:
        Kitti360FormatError: missing, unreadable (corrupt or truncated) or of the wrong size.
    """
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        problem = "cannot be decoded (corrupt or truncated PNG)" if Path(path).is_file() else "image not found"
        raise Kitti360FormatError(f"{path}: {problem}. It is part of the KITTI-360 download {download}.")
    if expected_size is not None and image.shape[:2] != tuple(expected_size):
        raise Kitti360FormatError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]} (WxH), the calibration says "
            f"{expected_size[1]}x{expected_size[0]}. It is part of the KITTI-360 download {download}."
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_png_atomically(path: Path, image: UInt8[np.ndarray, "H W 3"]) -> None:
    """Encode an RGB uint8 image as PNG and write it atomically."""
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    write_bytes_atomically(path, encoded.tobytes())


def resize_like_bts(image: UInt8[np.ndarray, "H W 3"], size: Tuple[int, int]) -> UInt8[np.ndarray, "h w 3"]:
    """Resize to ``size = (height, width)`` as BTS does (``cv2.resize``, bilinear, no anti-aliasing).

    The scale is independent per axis (376x1408 -> 192x640 is not uniform), so the intrinsics scale per axis.
    """
    import cv2

    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def cache_images(
    jobs: Sequence[CacheJob],
    folder_keys: Dict[Path, Dict[str, Any]],
    make_transform: Callable[[], Callable[[np.ndarray], np.ndarray]],
    source_size: Tuple[int, int],
    download: str,
    description: str,
) -> None:
    """Make the cached images of ``jobs`` that do not exist yet.

    Args:
        jobs: source PNG -> cached PNG.
        folder_keys: for every target folder, the parameters its files depend on.
        make_transform: returns the function that maps a decoded source (RGB uint8) to its cached image; it is
            called only when some image is missing (building it can cost a second).
        source_size: ``(height, width)`` every source must have.
        download: the official download of the sources (for errors).
        description: progress-bar text.
    """
    for folder, key in folder_keys.items():
        prepare_cache_folder(folder, key)
    todo = missing_jobs(jobs)
    if not todo:
        return
    transform = make_transform()

    def make(job: CacheJob) -> None:
        write_png_atomically(job.target, transform(read_rgb(job.source, download, source_size)))

    run_jobs(todo, make, description)
