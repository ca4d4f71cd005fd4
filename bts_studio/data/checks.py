"""Checks shared by every reader: user errors, rigid poses, intrinsics, image files, archives, writable folders.

One module so that every data family applies the same rule the same way (docs/reliability.md lists the cases
and the tests that prove them):

- :class:`UserError`: the base of every "your input is wrong" error (``Kitti360FormatError``,
  ``SRNFormatError``, ``DVRFormatError``, ``SplitFileError``...). ``bts_studio.utils.errors`` installs a
  ``sys.excepthook`` that prints such an error as its message alone (``BTS_STUDIO_TRACEBACK=1`` shows the
  traceback).
- :func:`check_rigid`: a camera/calibration matrix must hold a proper rotation (orthonormal within
  :data:`ROTATION_TOLERANCE`, determinant +1) and, if 4x4, the last row ``0 0 0 1``.
- :func:`check_pixel_intrinsics`: focal lengths finite and positive, principal point finite and inside the image.
- :func:`verify_image_file` / :func:`read_rgb_image` / :func:`rgb_image_path`: every image is checked (readable
  header, complete PNG/JPEG stream) and handed to nerfstudio as 8-bit RGB by one rule (:data:`RGB_RULE`).
- :func:`load_npz`: an ``.npz``/``.npy`` that cannot be read fails with its path.
- :func:`ensure_writable_dir`: a cache or output folder that cannot be made names the option that moves it.
- :func:`check_held_out_splits`: the train split's parse checks the val/test entries too, so a broken held-out
  object stops training at start-up instead of ``ns-eval`` hours later.
- :func:`nested_root_hint`: "did you mean --data X?" when the dataset root the user meant sits one or two levels
  below the folder given (e.g. the generator's output folder instead of its ``dvr/`` or ``srn_cars/``).
"""

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Tuple, Type, TypeVar, Union

import numpy as np

PathLike = Union[str, Path]

ROTATION_TOLERANCE = 1e-3
"""Largest ``|R^T R - I|`` entry and ``|det R - 1|`` accepted for a rotation. Stored poses are orthonormal to
about 1e-6 (float32 text); a rotation scaled by 1.01 already fails, so scaled or sheared poses never pass."""

RGB_RULE = (
    "palette ('P') images are expanded through their palette, alpha is dropped (RGBA, LA, PA), grey ('L', 'LA') "
    "is repeated into R, G and B, and 16-bit images are scaled to 8 bits (v * 255 / 65535, rounded)"
)
"""How every SRN/DVR image becomes 8-bit RGB. SRN (``data_util.load_rgb``: ``[..., :3]``), DVR (PIL
``convert("RGB")``) and pixelNeRF (``[..., :3]``) all drop alpha rather than composite it, so we do too."""


class UserError(ValueError):
    """Bad input or a bad option: the message names the file or option and what was expected.

    ``bts_studio.utils.errors`` prints such errors without a traceback when they end a command.
    """


def check_rigid(matrix: np.ndarray, where: str, fix: str, error: Type[Exception] = UserError) -> None:
    """Raise unless ``matrix`` (``[3, 3]``, ``[3, 4]`` or ``[4, 4]``) holds a proper rotation (a rigid transform).

    Args:
        matrix: rotation, ``[R | t]`` or homogeneous ``[[R, t], [0, 1]]``.
        where: the file and line or key, e.g. ``"poses.txt line 3"``; starts the message.
        fix: what to do about it, ends the message.
        error: the exception type raised (a format's own :class:`UserError` subclass).

    Raises:
        error: non-finite entries, ``R`` not orthonormal within :data:`ROTATION_TOLERANCE`, ``det R != +1`` (a
            reflection) or a 4x4 whose last row is not ``0 0 0 1``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise error(f"{where}: contains NaN or infinite values. {fix}")
    if matrix.shape == (4, 4) and np.abs(matrix[3] - [0.0, 0.0, 0.0, 1.0]).max() > ROTATION_TOLERANCE:
        raise error(f"{where}: the last row is {matrix[3].tolist()}, expected [0, 0, 0, 1] (a rigid transform). {fix}")
    rotation = matrix[:3, :3]
    deviation = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    determinant = float(np.linalg.det(rotation))
    if deviation > ROTATION_TOLERANCE or abs(determinant - 1.0) > ROTATION_TOLERANCE:
        scale = float(np.sqrt(np.abs(np.diag(rotation.T @ rotation))).mean())
        raise error(
            f"{where}: the rotation part is not a proper rotation (|R^T R - I| = {deviation:.3g}, det R = "
            f"{determinant:.4g}, mean column norm {scale:.4g}; expected orthonormal within {ROTATION_TOLERANCE:g} "
            f"and det +1). Scaled, sheared or mirrored camera poses would give wrong rays. {fix}"
        )


def first_non_rigid(matrices: np.ndarray) -> Optional[int]:
    """Index of the first of ``[N, 3|4, 3|4]`` matrices that :func:`check_rigid` would refuse, or None (vectorised)."""
    matrices = np.asarray(matrices, dtype=np.float64)
    if len(matrices) == 0:
        return None
    rotations = matrices[:, :3, :3]
    deviation = np.abs(np.swapaxes(rotations, 1, 2) @ rotations - np.eye(3)).max(axis=(1, 2))
    bad = ~np.isfinite(matrices).all(axis=(1, 2)) | ~(deviation <= ROTATION_TOLERANCE)
    bad |= ~(np.abs(np.linalg.det(np.nan_to_num(rotations)) - 1.0) <= ROTATION_TOLERANCE)
    if matrices.shape[1] == 4:
        bad |= ~(np.abs(matrices[:, 3] - [0.0, 0.0, 0.0, 1.0]).max(axis=1) <= ROTATION_TOLERANCE)
    found = np.flatnonzero(bad)
    return int(found[0]) if len(found) else None


def check_pixel_intrinsics(
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    height: Optional[int],
    width: Optional[int],
    where: str,
    fix: str,
    error: Type[Exception] = UserError,
) -> None:
    """Raise unless focal lengths are finite and > 0 and the principal point is finite and inside the image.

    All values in nerfstudio pixel units (the image spans ``[0, W] x [0, H]``). A principal point outside the
    image almost always means intrinsics in other units (normalised, or for another resolution).
    """
    values = {"fx": fx, "fy": fy, "cx": cx, "cy": cy}
    bad = [f"{name}={value}" for name, value in values.items() if not np.isfinite(value)]
    bad += [f"{name}={value}" for name, value in (("fx", fx), ("fy", fy)) if np.isfinite(value) and value <= 0]
    if bad:
        raise error(f"{where}: degenerate intrinsics {', '.join(bad)} (focal lengths must be finite and > 0). {fix}")
    if height is not None and width is not None and not (0 <= cx <= width and 0 <= cy <= height):
        raise error(
            f"{where}: principal point ({cx:.4g}, {cy:.4g}) px lies outside the {width}x{height} image "
            f"(intrinsics in other units, or for another resolution?). {fix}"
        )


# ------------------------------------------------------------------------------------------------------ images
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def verify_image_file(path: PathLike, what: str, error: Type[Exception] = UserError) -> Tuple[str, int, int]:
    """Check that ``path`` is a complete image without decoding it; return ``(PIL mode, height, width)``.

    Reads the header and the last bytes: a PNG must end with its ``IEND`` chunk, a JPEG with ``FFD9`` (what a
    truncated download or an interrupted copy lacks).

    Raises:
        error: missing, not an image, or truncated; the message names ``path`` and ``what`` it should be.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found (expected {what})")
    try:
        with Image.open(path) as image:
            mode, (width, height), kind = image.mode, image.size, image.format
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise error(f"{path}: not a readable image ({exc}); expected {what}") from exc
    marker = {"PNG": _PNG_END, "JPEG": _JPEG_END}.get(kind or "")
    if marker is not None:
        # Writers may append a few bytes after the end marker (JPEG padding is common), so look near the end.
        window = 64 if kind == "PNG" else 256
        with open(path, "rb") as stream:
            stream.seek(max(0, path.stat().st_size - window))
            tail = stream.read()
        if marker not in tail:
            raise error(f"{path}: truncated {kind} file (no end marker); expected {what}. Download or copy it again.")
    return mode, height, width


def read_rgb_image(path: PathLike, what: str, error: Type[Exception] = UserError) -> np.ndarray:
    """Decode an image as uint8 ``[H, W, 3]`` following :data:`RGB_RULE`; errors name ``path``."""
    from PIL import Image

    verify_image_file(path, what, error)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb8(image)
    except OSError as exc:
        raise error(f"{path}: cannot decode the image ({exc}); expected {what}") from exc


def to_rgb8(image) -> np.ndarray:
    """A PIL image as uint8 ``[H, W, 3]`` by :data:`RGB_RULE`."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(values * 255.0 / 65535.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "P":
        image = image.convert("RGBA")
    if mode in ("LA", "La", "L", "1"):
        grey = np.asarray(image.convert("L"))
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.ascontiguousarray(np.asarray(image.convert("RGBA"))[..., :3])


def rgb_image_path(path: PathLike, cache_dir: Path, what: str, option: str, error: Type[Exception] = UserError) -> Path:
    """``path`` itself when it is a complete 8-bit RGB image, else its RGB copy (:data:`RGB_RULE`) in ``cache_dir``.

    nerfstudio reads ``image_filenames`` as they are: palette indices would become colours, grey+alpha crashes
    it, 16-bit wraps around. The copy is keyed by the source path, size and mtime and is re-made when it does
    not verify (see :func:`cached_derivative`).
    """
    mode, _, _ = verify_image_file(path, what, error)
    if mode == "RGB":
        return Path(path)
    return cached_derivative(
        Path(path), cache_dir, "rgb", lambda source: read_rgb_image(source, what, error), option, error
    )


def cached_derivative(
    source: Path,
    cache_dir: Path,
    tag: str,
    make: Callable[[Path], np.ndarray],
    option: str,
    error: Type[Exception] = UserError,
    expected_size: Optional[Tuple[int, int]] = None,
) -> Path:
    """Path of the PNG ``make(source)`` (uint8 ``[H, W, 3]``) in ``cache_dir``, made once and verified on every use.

    The name is a hash of the source's absolute path, size, mtime and ``tag`` (the parameters), so a changed
    source or parameter gives a new entry. An existing entry is served only if it verifies (complete PNG of
    ``expected_size``); otherwise it is made again. Writes are atomic (temporary name, then rename).
    """
    from PIL import Image

    source = source.resolve()
    stat = source.stat()
    key = hashlib.sha1(f"{source}|{stat.st_mtime_ns}|{stat.st_size}|{tag}".encode()).hexdigest()
    target = cache_dir / key[:2] / f"{key}.png"
    if target.is_file():
        try:
            _, height, width = verify_image_file(target, "a cached image")
            if expected_size is None or (height, width) == tuple(expected_size):
                return target
        except UserError:
            pass  # a damaged entry: made again below
    ensure_writable_dir(target.parent, option, error)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp.png")
    try:
        Image.fromarray(make(source)).save(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


# ---------------------------------------------------------------------------------------------- other files
def load_npz(path: PathLike, what: str, error: Type[Exception] = UserError):
    """``np.load`` of an ``.npz``/``.npy`` whose failure (missing, truncated, not numpy) names ``path`` and ``what``."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found (expected {what})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise error(
            f"{path}: cannot be read as {what} ({type(exc).__name__}: {exc}); the file may be truncated"
        ) from exc


def npz_array(archive, key: str, path: PathLike, error: Type[Exception] = UserError) -> np.ndarray:
    """``archive[key]`` where a truncated member (``BadZipFile``, CRC error) fails with ``path`` and ``key``."""
    import zipfile

    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise error(
            f"{path}: entry {key!r} cannot be read ({type(exc).__name__}: {exc}); the file may be truncated"
        ) from exc


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_staging(out: Path, tags: Tuple[str, ...] = ("tmp", "partial", "old")) -> list:
    """Delete ``.<out name>.<tag>-<pid>...`` siblings of ``out`` left by a generator that was killed.

    Generators build their output in such a staging folder and rename it into place; a SIGKILL skips their
    clean-up. A folder is removed only when the process id in its name no longer runs (and, for ``old``, only
    when ``out`` exists, i.e. the replacement had finished). Returns the removed paths.
    """
    import re
    import shutil

    out = Path(out).absolute()
    if not out.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.({'|'.join(tags)})-(\d+)(?:-.*)?$")
    removed = []
    for entry in out.parent.iterdir():
        match = pattern.match(entry.name)
        if not match or not entry.is_dir() or _process_is_running(int(match.group(2))):
            continue
        if match.group(1) == "old" and not out.exists():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def ensure_writable_dir(folder: PathLike, option: str, error: Type[Exception] = UserError) -> Path:
    """Create ``folder`` (and parents) and check it is writable; failures name ``option``, which moves it."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise error(f"cannot use {folder}: {parent} is a file, not a folder. Choose another folder with {option}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"cannot create {folder} ({exc.strerror or exc}). Choose another folder with {option}.") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{folder} is not writable. Choose another folder with {option}.")
    return folder


def nested_root_hint(folder: PathLike, looks_like_root: Callable[[Path], bool], option: str = "--data") -> str:
    """``"; did you mean {option} <folder>?"`` for the folders next to ``folder`` that ``looks_like_root`` accepts
    (its sub-folders one or two levels down, else its parent), or ``""`` when there is none. Appended to the
    "wrong folder" errors of every reader, so that pointing at a parent (``bts-studio synth-shapenet OUT`` writes
    ``OUT/dvr`` and ``OUT/srn_cars``) or at a split folder names the folder to pass instead."""
    folder = Path(folder)
    if not folder.is_dir():
        return ""

    def subfolders(path: Path) -> list:
        return sorted(child for child in path.iterdir() if child.is_dir() and not child.name.startswith("."))

    found = []
    for child in subfolders(folder):
        if looks_like_root(child):
            found.append(child)
        else:
            found.extend(grandchild for grandchild in subfolders(child) if looks_like_root(grandchild))
    if not found and folder.parent != folder and looks_like_root(folder.parent):
        found.append(folder.parent)
    if not found:
        return ""
    return f"; did you mean {option} {' or '.join(str(path) for path in found[:3])}?"


Entry = TypeVar("Entry")


def check_held_out_splits(
    split: str,
    entries_of: Callable[[str], Iterable[Entry]],
    check: Callable[[Entry], object],
    error: Type[UserError],
    what: str,
) -> None:
    """When ``split`` is ``train``, run ``check`` on every entry of the val and test splits (a reader's cheap check:
    folder layout, small text files), so that a broken held-out object stops training at start-up rather than
    ``ns-eval`` hours later. A split whose ``entries_of`` raises ``error`` (no list or folder for it) is skipped:
    nothing will parse it.

    Args:
        what: how the message names the entry's place before the split's name, e.g. ``"an object of the"``.

    Raises:
        error: ``check``'s, its message followed by ``({what} '<split>' split, checked before training)``.
    """
    if split != "train":
        return
    for other in ("val", "test"):
        try:
            entries = list(entries_of(other))
        except error:
            continue  # no (or an empty) list or folder for that split: it is never parsed
        for entry in entries:
            try:
                check(entry)
            except error as failure:
                raise error(f"{failure} ({what} {other!r} split, checked before training)") from None
