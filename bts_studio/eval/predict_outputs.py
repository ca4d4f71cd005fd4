"""Atomic, no-clobber output files of ``bts-studio predict``.

Every file is written to a hidden temporary name in its folder and renamed over the target, so an interrupted run
never leaves a half-written file under the final name; an existing target is only replaced with ``overwrite``.
"""

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class OutputExistsError(FileExistsError):
    """A target exists and ``--overwrite`` was not given."""


@contextmanager
def atomic_target(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path (same folder and suffix) to write; it becomes ``path`` when the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_png(path: Path, image: np.ndarray, overwrite: bool = False) -> Path:
    """uint8 ``[H, W, 3]`` image as PNG."""
    from PIL import Image

    with atomic_target(path, overwrite) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
    return path


def write_npy(path: Path, array: np.ndarray, overwrite: bool = False) -> Path:
    with atomic_target(path, overwrite) as temporary:
        with open(temporary, "wb") as stream:
            np.save(stream, array)
    return path


def write_json(path: Path, payload: Any, overwrite: bool = False) -> Path:
    with atomic_target(path, overwrite) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path
