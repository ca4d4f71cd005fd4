"""Intrinsics of a user's photo, and fitting the photo to the size a bts-density model was trained on.

Sources of intrinsics, in the order ``bts-studio predict`` tries them (the first one given wins):

1. ``--fx [--fy --cx --cy]``: pixels of the given image, OpenCV convention (the centre of pixel ``(0, 0)`` is at
   ``(0, 0)``, as OpenCV, KITTI and most calibration tools print them); missing ``fy`` = ``fx``, missing principal
   point = the image centre;
2. ``--fov-deg``: horizontal field of view, square pixels, centred principal point;
3. ``--calibration FILE``: a KITTI-360 ``perspective.txt`` (``P_rect_00`` + ``S_rect_00``), a KITTI raw
   ``calib_cam_to_cam.txt`` (``P_rect_02`` + ``S_rect_02``) or a KITTI odometry/object ``calib.txt`` (``P2:``);
   scaled per axis from the calibrated size to the image's size, as the kitti360-data dataparser does;
4. EXIF: ``FocalLength`` (mm) with the sensor's ``FocalPlaneXResolution`` (pixels per unit on the sensor), else
   ``FocalLengthIn35mmFilm`` (35 mm-equivalent focal length, defined on the 43.27 mm full-frame diagonal);
5. otherwise the model's training camera's horizontal field of view with square pixels and a centred principal
   point, and a warning: a photo taken like the training frames (a dashcam) is what the model knows.

All returned ``K`` are in nerfstudio pixel units (docs/conventions.md, "Pixels": OpenCV ``cx, cy`` + 0.5).

Fitting (``fit_to_training``): BTS resizes KITTI-360's 1408x376 frames to 640x192 per axis
(``cv2.resize``, bilinear), so its training pixels are not square (``fy / fx`` = 1.12). A photo is first
centre-cropped (``crop_vertical`` moves the crop band) to the aspect that becomes the training images' aspect
*and* pixel shape after the per-axis resize, then resized to the training size exactly as training did, with
``K`` following the crop (principal point shifts) and the resize (per-axis scale). Downscaling by more than 2x
(phone photos) low-passes first (``antialias``), which BTS never needed at its 2.2x.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

FULL_FRAME_DIAGONAL_MM = 43.2666
"""Diagonal of a 36 x 24 mm frame; EXIF's 35 mm-equivalent focal length is defined on it."""

SANE_HFOV_DEG = (15.0, 140.0)
"""Horizontal fields of view outside this range are warned about (telephoto or fisheye territory)."""
SANE_PIXEL_ASPECT = (0.5, 2.0)
"""``fy / fx`` outside this range is warned about."""
FAR_FROM_TRAINING_DEG = 15.0
"""A horizontal field of view further than this from the training camera's is warned about."""

KITTI360_PERSPECTIVE_FX = 552.554261
KITTI360_PERSPECTIVE_SIZE = (376, 1408)
"""KITTI-360's rectified perspective camera (``P_rect_00``, ``S_rect_00``: height, width); the training camera
assumed when a run's data cannot be read (bts-density trains on kitti360-data only)."""


class IntrinsicsError(ValueError):
    """Intrinsics that cannot be used (unparsable calibration, non-positive focal length)."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one image and where they came from."""

    K: Float[Tensor, "3 3"]
    """float64, nerfstudio pixel units, for an image of ``width`` x ``height``."""
    width: int
    height: int
    source: str
    """Human-readable origin (``--fx/--fy/--cx/--cy``, ``EXIF FocalLength 4.2 mm ...``, ``default ...``)."""
    is_default: bool = False

    def __post_init__(self) -> None:
        assert self.K.shape == (3, 3), f"K must be [3, 3], got {tuple(self.K.shape)}"
        if not (float(self.K[0, 0]) > 0 and float(self.K[1, 1]) > 0):
            raise IntrinsicsError(
                f"focal lengths must be positive, got fx={float(self.K[0, 0])}, fy={float(self.K[1, 1])}"
            )

    @property
    def hfov_deg(self) -> float:
        return horizontal_fov_deg(self.K, self.width)


def horizontal_fov_deg(K: Tensor, width: float) -> float:
    """Full horizontal field of view of a centred-principal-point camera of focal ``K[0, 0]``, degrees."""
    return math.degrees(2 * math.atan(width / 2 / float(K[0, 0])))


def vertical_fov_deg(K: Tensor, height: float) -> float:
    return math.degrees(2 * math.atan(height / 2 / float(K[1, 1])))


def pinhole(fx: float, fy: float, cx: float, cy: float) -> Float[Tensor, "3 3"]:
    """``[3, 3]`` float64 intrinsics matrix (units as given)."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


def from_flags(
    width: int,
    height: int,
    fx: float,
    fy: Optional[float] = None,
    cx: Optional[float] = None,
    cy: Optional[float] = None,
) -> Intrinsics:
    """``--fx --fy --cx --cy`` (OpenCV pixel convention) as nerfstudio intrinsics of a ``width`` x ``height`` image."""
    fy = fx if fy is None else fy
    u0 = width / 2 if cx is None else cx + 0.5
    v0 = height / 2 if cy is None else cy + 0.5
    given = (
        f"fx={fx:g}, fy={fy:g}, cx={'centre' if cx is None else f'{cx:g}'}, cy={'centre' if cy is None else f'{cy:g}'}"
    )
    return Intrinsics(pinhole(fx, fy, u0, v0), width, height, f"--fx/--fy/--cx/--cy ({given})")


def from_fov(width: int, height: int, hfov_deg: float, source: Optional[str] = None) -> Intrinsics:
    """Square pixels, centred principal point, horizontal field of view ``hfov_deg``."""
    if not 0 < hfov_deg < 180:
        raise IntrinsicsError(f"a horizontal field of view must be in (0, 180) degrees, got {hfov_deg}")
    focal = width / 2 / math.tan(math.radians(hfov_deg) / 2)
    return Intrinsics(pinhole(focal, focal, width / 2, height / 2), width, height, source or f"--fov-deg {hfov_deg:g}")


# ----------------------------------------------------------------------------------------- calibration files
def _parse_calibration(path: Path) -> Dict[str, np.ndarray]:
    values: Dict[str, np.ndarray] = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" not in line:
            continue
        key, _, rest = line.partition(":")
        try:
            values[key.strip()] = np.array([float(token) for token in rest.split()], dtype=np.float64)
        except ValueError:
            continue  # e.g. calib_time: 09-Jan-2012 13:57:47
    return values


def from_calibration(path: Path, width: int, height: int, camera: Optional[int] = None) -> Intrinsics:
    """Intrinsics from a KITTI / KITTI-360 calibration file (see the module docstring), for this image size.

    Args:
        path: the calibration file.
        width, height: the image's size; the calibration is scaled per axis from its ``S_rect`` size (when the file
            has one) to it, as the dataparser scales ``P_rect_00`` to the training size.
        camera: the camera index to read (default: 0 for KITTI-360's ``P_rect_00``, else 2, KITTI's left colour).

    Raises:
        IntrinsicsError: the file is missing or has no usable projection matrix.
    """
    from bts_studio.data.kitti360.rig import scale_intrinsics

    path = Path(path)
    if not path.is_file():
        raise IntrinsicsError(f"{path}: calibration file not found")
    values = _parse_calibration(path)
    if camera is None:  # KITTI-360's left perspective camera, else KITTI's left colour camera
        candidates = [("P_rect_00", "S_rect_00"), ("P_rect_02", "S_rect_02"), ("P2", None)]
    else:
        candidates = [(f"P_rect_{camera:02d}", f"S_rect_{camera:02d}"), (f"P{camera}", None)]
    for key, size_key in candidates:
        if key not in values:
            continue
        if values[key].size != 12:
            raise IntrinsicsError(f"{path}: {key} has {values[key].size} numbers, expected 12 (a 3x4 matrix)")
        projection = values[key].reshape(3, 4)
        size = values.get(size_key) if size_key else None
        if size is not None and size.size == 2:
            calibrated = (int(round(size[1])), int(round(size[0])))  # S_rect is width height
            note = f", scaled from {calibrated[1]}x{calibrated[0]}" if calibrated != (height, width) else ""
        else:
            calibrated, note = (height, width), " (no S_rect: assumed to be for this image size)"
        K = torch.from_numpy(scale_intrinsics(projection, calibrated, (height, width)))
        return Intrinsics(K, width, height, f"calibration {path} ({key}{note})")
    wanted = " or ".join(key for key, _ in candidates)
    raise IntrinsicsError(
        f"{path}: no {wanted} projection matrix found; expected a KITTI or KITTI-360 calibration file"
    )


# --------------------------------------------------------------------------------------------------- EXIF
def _rational(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


_FOCAL_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
"""EXIF FocalPlaneResolutionUnit -> millimetres (2 inch, 3 cm, 4 mm, 5 um)."""


def from_exif(exif: Mapping[str, Any], width: int, height: int) -> Optional[Intrinsics]:
    """Intrinsics from EXIF tags (names as ``PIL.ExifTags.TAGS``), or None when they do not determine the focal.

    ``FocalPlaneXResolution`` refers to the sensor's full readout (``ExifImageWidth`` pixels), so the focal is
    rescaled to this image's width when the photo was resized after capture.
    """
    focal_mm = _rational(exif.get("FocalLength"))
    plane_resolution = _rational(exif.get("FocalPlaneXResolution"))
    unit_mm = _FOCAL_PLANE_UNIT_MM.get(int(exif.get("FocalPlaneResolutionUnit", 2) or 2))
    if focal_mm and plane_resolution and unit_mm:
        focal_px = focal_mm * plane_resolution / unit_mm
        recorded_width = _rational(exif.get("ExifImageWidth"))
        recorded_height = _rational(exif.get("ExifImageHeight"))
        if recorded_width and recorded_height:
            # portrait photos rotated by exif_transpose swap the recorded sides
            long_recorded, long_now = max(recorded_width, recorded_height), max(width, height)
            focal_px *= long_now / long_recorded
        sensor_width = width / focal_px * focal_mm
        return Intrinsics(
            pinhole(focal_px, focal_px, width / 2, height / 2),
            width,
            height,
            f"EXIF FocalLength {focal_mm:g} mm, sensor {sensor_width:.2f} mm wide (FocalPlaneXResolution)",
        )
    focal_35 = _rational(exif.get("FocalLengthIn35mmFilm"))
    if focal_35:
        focal_px = focal_35 / FULL_FRAME_DIAGONAL_MM * math.hypot(width, height)
        return Intrinsics(
            pinhole(focal_px, focal_px, width / 2, height / 2),
            width,
            height,
            f"EXIF FocalLengthIn35mmFilm {focal_35:g} mm (35 mm-equivalent, on the frame diagonal)",
        )
    return None


def read_exif(image: Any) -> Dict[str, Any]:
    """EXIF tags of a PIL image by name, the camera sub-IFD included; empty when there are none."""
    from PIL import ExifTags

    try:
        exif = image.getexif()
    except Exception:  # noqa: BLE001 - broken EXIF only means "no EXIF"
        return {}
    tags = {ExifTags.TAGS.get(key, str(key)): value for key, value in exif.items()}
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        tags.update({ExifTags.TAGS.get(key, str(key)): value for key, value in sub.items()})
    except Exception:  # noqa: BLE001
        pass
    return tags


def default_intrinsics(width: int, height: int, training_hfov_deg: float) -> Intrinsics:
    """The documented fallback: the training camera's horizontal field of view, square pixels, centred."""
    intrinsics = from_fov(
        width,
        height,
        training_hfov_deg,
        f"default: the training camera's horizontal field of view ({training_hfov_deg:.1f} deg), square pixels, "
        "centred principal point (no --fx, --fov-deg, --calibration or EXIF focal length)",
    )
    return Intrinsics(intrinsics.K, width, height, intrinsics.source, is_default=True)


def sanity_warnings(intrinsics: Intrinsics) -> List[str]:
    """Warnings for intrinsics outside a sane range (field of view, pixel shape, principal point)."""
    K, width, height = intrinsics.K, intrinsics.width, intrinsics.height
    warnings = []
    hfov = horizontal_fov_deg(K, width)
    if not SANE_HFOV_DEG[0] <= hfov <= SANE_HFOV_DEG[1]:
        warnings.append(
            f"horizontal field of view {hfov:.1f} deg is outside {SANE_HFOV_DEG[0]:g}-{SANE_HFOV_DEG[1]:g} deg; "
            "check the focal length (it is in pixels of the given image)"
        )
    aspect = float(K[1, 1] / K[0, 0])
    if not SANE_PIXEL_ASPECT[0] <= aspect <= SANE_PIXEL_ASPECT[1]:
        warnings.append(f"fy / fx = {aspect:.2f} is far from square pixels")
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (0.25 * width <= cx <= 0.75 * width and 0.25 * height <= cy <= 0.75 * height):
        warnings.append(
            f"principal point ({cx - 0.5:.1f}, {cy - 0.5:.1f}) is far from the image centre "
            f"({width / 2 - 0.5:.1f}, {height / 2 - 0.5:.1f})"
        )
    return warnings


# ------------------------------------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class TrainingCamera:
    """What a model was trained on: image size and (when known) intrinsics at that size."""

    size: Tuple[int, int]
    """``(height, width)``."""
    K: Float[Tensor, "3 3"]
    """Intrinsics at ``size``, nerfstudio pixel units."""
    source: str
    """Where ``K`` came from (the run's calibration, or KITTI-360's published camera)."""

    @property
    def pixel_aspect(self) -> float:
        """``fy / fx`` of the training pixels (1.12 for BTS's 640x192 KITTI-360)."""
        return float(self.K[1, 1] / self.K[0, 0])

    @property
    def hfov_deg(self) -> float:
        return horizontal_fov_deg(self.K, self.size[1])

    @property
    def vfov_deg(self) -> float:
        return vertical_fov_deg(self.K, self.size[0])


@dataclass
class FittedImage:
    """An image at the training size, its intrinsics, and what was done to get there."""

    image: Float[Tensor, "3 h w"]
    K: Float[Tensor, "3 3"]
    """float32, nerfstudio pixel units, for ``image``."""
    crop_box: Tuple[int, int, int, int]
    """``(left, top, right, bottom)`` in the given image's pixels."""
    scale: Tuple[float, float]
    """``(sx, sy)`` of the resize after the crop."""
    notes: List[str] = field(default_factory=list)

    def report(self) -> Dict[str, Any]:
        return {"crop_box_ltrb": list(self.crop_box), "resize_scale_xy": list(self.scale), "notes": self.notes}


def crop_for_training(
    width: int, height: int, K: Tensor, training: TrainingCamera, crop_vertical: float = 0.5
) -> Tuple[int, int, int, int]:
    """The centred crop ``(left, top, right, bottom)`` whose per-axis resize to the training size gives the
    training pixel shape: ``fy' / fx'`` = training's. ``crop_vertical`` (0 top, 1 bottom) places a horizontal band.
    """
    train_h, train_w = training.size
    # after the resize: fx' = fx * W_t / w_c, fy' = fy * H_t / h_c; want fy' / fx' = training.pixel_aspect
    aspect = training.pixel_aspect * float(K[0, 0] / K[1, 1]) * train_w / train_h  # w_c / h_c
    if width / height > aspect:
        crop_w, crop_h = max(1, round(height * aspect)), height
    else:
        crop_w, crop_h = width, max(1, round(width / aspect))
    left = (width - crop_w) // 2
    top = round((height - crop_h) * min(max(crop_vertical, 0.0), 1.0))
    return left, top, left + crop_w, top + crop_h


def fit_to_training(
    image: Float[Tensor, "3 H W"], intrinsics: Intrinsics, training: TrainingCamera, crop_vertical: float = 0.5
) -> FittedImage:
    """Crop to the training aspect and resize to the training size as BTS's data loading does; ``K`` follows.

    The resize is torch's bilinear with ``align_corners=False`` (the pixel-centre grid of ``cv2.INTER_LINEAR``)
    and scales ``fx, cx`` by ``w / W`` and ``fy, cy`` by ``h / H`` in nerfstudio units, the same rule as the
    dataparser's ``scale_intrinsics`` and ``encode_source``'s resize.
    """
    assert image.dim() == 3 and image.shape[0] == 3, f"image must be [3, H, W], got {tuple(image.shape)}"
    height, width = image.shape[-2:]
    assert (height, width) == (intrinsics.height, intrinsics.width), "intrinsics are for another image size"
    K = intrinsics.K.clone().double()
    notes: List[str] = []
    left, top, right, bottom = crop_for_training(width, height, K, training, crop_vertical)
    # a crop of a pixel or two is rounding, not a different aspect
    if (right - left) >= width - 1 and (bottom - top) >= height - 1:
        left, top, right, bottom = 0, 0, width, height
    if (left, top, right, bottom) != (0, 0, width, height):
        image = image[:, top:bottom, left:right]
        K[0, 2] -= left
        K[1, 2] -= top
        notes.append(
            f"cropped {width}x{height} to {right - left}x{bottom - top} at ({left}, {top}) for the training aspect"
        )
    train_h, train_w = training.size
    crop_h, crop_w = image.shape[-2:]
    sx, sy = train_w / crop_w, train_h / crop_h
    if (crop_h, crop_w) != (train_h, train_w):
        antialias = min(sx, sy) < 0.5
        image = F.interpolate(
            image[None].float(), size=(train_h, train_w), mode="bilinear", align_corners=False, antialias=antialias
        )[0].clamp(0, 1)
        K[0] *= sx
        K[1] *= sy
        notes.append(
            f"resized {crop_w}x{crop_h} to {train_w}x{train_h} (x {sx:.3f}, y {sy:.3f}, bilinear"
            f"{', anti-aliased' if antialias else ''})"
        )
    return FittedImage(image.float().contiguous(), K.float(), (left, top, right, bottom), (sx, sy), notes)


def fov_comparison(K: Tensor, size: Tuple[int, int], training: TrainingCamera) -> Tuple[Dict[str, float], List[str]]:
    """Fields of view of the fitted image against the training camera's; warnings when far apart."""
    height, width = size
    report = {
        "hfov_deg": horizontal_fov_deg(K, width),
        "vfov_deg": vertical_fov_deg(K, height),
        "training_hfov_deg": training.hfov_deg,
        "training_vfov_deg": training.vfov_deg,
    }
    report["hfov_difference_deg"] = report["hfov_deg"] - report["training_hfov_deg"]
    warnings = []
    if abs(report["hfov_difference_deg"]) > FAR_FROM_TRAINING_DEG:
        warnings.append(
            f"horizontal field of view {report['hfov_deg']:.1f} deg is {abs(report['hfov_difference_deg']):.1f} deg "
            f"from the training camera's {report['training_hfov_deg']:.1f} deg; the model has never seen such "
            "perspective, so expect biased depths"
        )
    return report, warnings


def kitti360_training_camera(size: Tuple[int, int]) -> TrainingCamera:
    """KITTI-360's rectified perspective camera resized per axis to ``size``, as the dataparser does."""
    height0, width0 = KITTI360_PERSPECTIVE_SIZE
    fx = KITTI360_PERSPECTIVE_FX
    K = pinhole(fx * size[1] / width0, fx * size[0] / height0, size[1] / 2, size[0] / 2)
    return TrainingCamera(tuple(size), K, "KITTI-360's published perspective camera (the run's data was not found)")
