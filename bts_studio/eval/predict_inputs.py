"""What ``bts-studio predict`` reads: image files, folders of frames, video files; each checked before any work.

Every input becomes a list of :class:`InputFrame` (one per image or video frame). Images are opened through
Pillow (EXIF orientation applied, as a phone shows the photo), videos through OpenCV (a nerfstudio dependency).
An unreadable, empty or non-RGB file raises :class:`BadInputError` naming the file and what was expected;
``bts-studio predict --skip-bad`` skips it and lists it at the end.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from jaxtyping import UInt8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
"""Pillow modes that hold colour; grey-scale modes (L, LA, I, F, 1, I;16) are refused: the model needs RGB."""


class BadInputError(ValueError):
    """An input file that cannot be used; the message names the file and what was expected."""


@dataclass(frozen=True)
class InputFrame:
    """One image to predict on."""

    path: Path
    """The image file, or the video file the frame comes from."""
    name: str
    """Output folder name: the image's stem, or ``<video stem>_<frame:06d>``."""
    frame_index: Optional[int] = None
    """Frame number in a video (None for image files)."""
    group: Optional[Path] = None
    """The folder or video given on the command line that this frame came from (None for a single image)."""


@dataclass
class LoadedImage:
    """A decoded RGB image and its EXIF tags."""

    pixels: UInt8[np.ndarray, "H W 3"]
    exif: Dict[str, Any] = field(default_factory=dict)


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadInputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: empty file (0 bytes); expected an RGB image ({', '.join(IMAGE_SUFFIXES)})")
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise BadInputError(f"{path}: not a readable image ({error}); expected an RGB image file") from error
    if image.mode not in COLOUR_MODES:
        raise BadInputError(
            f"{path}: {image.mode} image ({image.width}x{image.height}, {len(image.getbands())} channel(s)); "
            "expected RGB colour: the model was trained on colour images"
        )
    if image.width < 1 or image.height < 1:
        raise BadInputError(f"{path}: image has no pixels ({image.width}x{image.height})")
    return image


def check_image(path: Path) -> None:
    """Cheap check (header only) that ``path`` is a non-empty colour image; raises :class:`BadInputError`."""
    _open_image(Path(path)).close()


def read_image(path: Path) -> LoadedImage:
    """Decode an image as uint8 RGB ``[H, W, 3]`` (alpha dropped, EXIF orientation applied) with its EXIF tags.

    Raises:
        BadInputError: missing, empty, undecodable or grey-scale file.
    """
    from PIL import ImageOps

    from bts_studio.eval.predict_intrinsics import read_exif

    path = Path(path)
    image = _open_image(path)
    try:
        exif = read_exif(image)
        image = ImageOps.exif_transpose(image)
        pixels = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data only shows when decoding
        raise BadInputError(f"{path}: the image data is corrupt or truncated ({error})") from error
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.size == 0:
        raise BadInputError(f"{path}: decoded to shape {pixels.shape}; expected an RGB image [H, W, 3]")
    return LoadedImage(np.ascontiguousarray(pixels), exif)


def _video_frame_count(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise BadInputError(f"{path}: not a readable video (OpenCV could not open it)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:  # some containers do not store it: count by reading
            count = 0
            while capture.grab():
                count += 1
    finally:
        capture.release()
    if count == 0:
        raise BadInputError(f"{path}: video has no frames")
    return count


def read_video_frames(path: Path, indices: Sequence[int]) -> Iterator[Tuple[int, UInt8[np.ndarray, "H W 3"]]]:
    """Yield ``(index, RGB uint8 frame)`` for the wanted frame indices (ascending), decoding sequentially."""
    import cv2

    wanted = sorted(set(int(i) for i in indices))
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BadInputError(f"{path}: not a readable video (OpenCV could not open it)")
    try:
        position, cursor = 0, 0
        while cursor < len(wanted):
            ok = capture.grab()
            if not ok:
                raise BadInputError(f"{path}: frame {wanted[cursor]} could not be decoded (video ends at {position})")
            if position == wanted[cursor]:
                ok, frame = capture.retrieve()
                if not ok or frame is None or frame.ndim != 3:
                    raise BadInputError(f"{path}: frame {position} could not be decoded")
                yield position, np.ascontiguousarray(frame[..., ::-1])
                cursor += 1
            position += 1
    finally:
        capture.release()


def expand_inputs(paths: Sequence[Path], video_stride: int = 1, max_frames: Optional[int] = None) -> List[InputFrame]:
    """Every frame named by the command line: image files, folders of images (sorted, not recursive), videos.

    Raises:
        BadInputError: a path that does not exist, a folder without image files, an unreadable video, or a file
            that is neither an image nor a video by its suffix.
    """
    frames: List[InputFrame] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise BadInputError(
                    f"{path}: folder has no image files ({', '.join(IMAGE_SUFFIXES)}); nothing to predict on"
                )
            frames.extend(InputFrame(file, file.stem, None, path) for file in files[:: max(1, video_stride)])
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            count = _video_frame_count(path)
            indices = list(range(0, count, max(1, video_stride)))[:max_frames]
            frames.extend(InputFrame(path, f"{path.stem}_{i:06d}", i, path) for i in indices)
        elif not path.exists():
            raise BadInputError(f"{path}: no such file or folder")
        else:
            frames.append(InputFrame(path, path.stem))
    if max_frames is not None:
        frames = frames[:max_frames]
    names = [frame.name for frame in frames]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadInputError(
            f"several inputs would write to the same output folder ({', '.join(duplicates[:5])}); "
            "rename them or predict on them in separate calls"
        )
    return frames
