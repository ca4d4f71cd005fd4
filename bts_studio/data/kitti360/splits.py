"""KITTI-360 frame splits in Behind the Scenes' format, and the interleaved split used when none is given.

A BTS split file (``datasets/kitti_360/splits/seg/{train,val,test}_files.txt`` in the BTS repository) holds one
input entry per line: ``<sequence> <image id> <l|r>``, e.g. ``2013_05_28_drive_0000_sync 0000000386 l``.
``l`` makes the left rectified camera (``image_00``) the input view, ``r`` the right one (``image_01``).

Without a split file the dataparser builds an *interleaved* split over the posed frames: every
``test_every``-th pose index is a test input (left camera only, as in BTS's test split) and every other
posed frame is a training input for both cameras. This is the split the synthetic data uses.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from bts_studio.data.checks import UserError

SPLIT_FILE_NAMES = {"train": "train_files.txt", "val": "val_files.txt", "test": "test_files.txt"}
"""File names BTS uses inside a split folder, per nerfstudio split name."""


@dataclass(frozen=True)
class SplitEntry:
    """One input view: a frame of a sequence seen by the left (``l``) or right (``r``) perspective camera."""

    sequence: str
    image_id: int
    is_right: bool

    def to_line(self) -> str:
        """The entry as a BTS split-file line (without newline)."""
        return f"{self.sequence} {self.image_id:010d} {'r' if self.is_right else 'l'}"


class SplitFileError(UserError):
    """A split file is missing or malformed, or names a frame that does not exist."""


def read_split_file(path: Path) -> List[SplitEntry]:
    """Read a BTS split file.

    Args:
        path: text file with lines ``<sequence> <image id> <l|r>``; blank lines and ``#`` comments are ignored.

    Returns:
        The entries in file order.

    Raises:
        SplitFileError: the file is missing or a line does not have that form (the message names path and line).
    """
    path = Path(path)
    if not path.is_file():
        raise SplitFileError(f"split file {path} does not exist (expected lines '<sequence> <image id> <l|r>').")
    entries = []
    for line_number, raw_line in enumerate(path.read_text().splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or parts[2] not in ("l", "r") or not parts[1].isdigit():
            raise SplitFileError(
                f"{path}:{line_number}: expected '<sequence> <image id> <l|r>' "
                f"(e.g. '2013_05_28_drive_0000_sync 0000000386 l'), got {raw_line!r}."
            )
        entries.append(SplitEntry(parts[0], int(parts[1]), parts[2] == "r"))
    return entries


def write_split_file(path: Path, entries: Iterable[SplitEntry]) -> None:
    """Write entries as a BTS split file, atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(entry.to_line() + "\n" for entry in entries)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def resolve_split_file(split_file: Path, split: str) -> Path:
    """The split file that answers a nerfstudio split.

    Args:
        split_file: a single BTS split file (used for every split) or a folder with BTS's
            ``train_files.txt`` / ``val_files.txt`` / ``test_files.txt``.
        split: ``"train"``, ``"val"`` or ``"test"``. A folder without ``val_files.txt`` answers ``"val"``
            with ``test_files.txt``.

    Returns:
        The file to read.
    """
    split_file = Path(split_file)
    if not split_file.is_dir():
        return split_file
    if split not in SPLIT_FILE_NAMES:
        raise SplitFileError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILE_NAMES)}.")
    candidate = split_file / SPLIT_FILE_NAMES[split]
    if split == "val" and not candidate.is_file():
        candidate = split_file / SPLIT_FILE_NAMES["test"]
    if not candidate.is_file():
        present = sorted(p.name for p in split_file.glob("*_files.txt"))
        raise SplitFileError(
            f"split folder {split_file} has no {SPLIT_FILE_NAMES[split]} for split {split!r} "
            f"(found: {present or 'no *_files.txt'})."
        )
    return candidate


def interleaved_split(
    frame_ids: Dict[str, np.ndarray],
    split: str,
    test_every: int,
    frame_range: Optional[Tuple[int, int]] = None,
) -> List[SplitEntry]:
    """Build the default split over posed frames.

    Args:
        frame_ids: per sequence, the image ids of its usable frames in ``poses.txt`` order (index = pose index).
        split: ``"test"`` and ``"val"`` give every ``test_every``-th pose index (0, n, 2n, ...) with the left
            camera; ``"train"`` gives all other pose indices with both cameras, ``l`` then ``r``
            (as BTS's training split lists both).
        test_every: the test stride; 0 puts every frame in every split (test entries are still left-only).
        frame_range: optional half-open range ``[start, end)`` of image ids; frames outside it are left out.

    Returns:
        Entries ordered by sequence, then camera side, then frame.
    """
    if split not in SPLIT_FILE_NAMES:
        raise SplitFileError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILE_NAMES)}.")
    entries: List[SplitEntry] = []
    for sequence in sorted(frame_ids):
        ids = np.asarray(frame_ids[sequence])
        pose_indices = np.arange(len(ids))
        if frame_range is not None:
            keep = (ids >= frame_range[0]) & (ids < frame_range[1])
            pose_indices, ids = pose_indices[keep], ids[keep]
        is_test = pose_indices % test_every == 0 if test_every > 0 else np.ones(len(ids), dtype=bool)
        if split == "train":
            chosen = ids[~is_test] if test_every > 0 else ids
            sides: Sequence[bool] = (False, True)
        else:
            chosen = ids[is_test]
            sides = (False,)
        for is_right in sides:
            entries.extend(SplitEntry(sequence, int(image_id), is_right) for image_id in chosen)
    return entries
