"""Bird's-eye occupancy panels of a :class:`FrameField` (and of an analytic scene), composed into one image.

The BEV maths is ``bts_studio.eval.bev`` (BTS's "profile"); this module samples a field on the grid, colours the
result and lays panels out: camera panels (input image over depth map) on the left, BEV panels on the right.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from bts_studio.eval.bev import BTS_PROFILE_THRESHOLD, bev_profile, bev_query_points
from bts_studio.eval.density_field import FrameField
from bts_studio.eval.occupancy import CAMERA_TILT_DEG, outside_frustum

SCENE_OCCUPIED_DENSITY = 100.0
"""Density given to the inside of analytic solids for the ground-truth panel (blocks a column at once)."""


@dataclass(frozen=True)
class BevGrid:
    """Extent and sampling of a BEV image, in the tilted (road-parallel) camera frame."""

    x_range: Tuple[float, float] = (-15.0, 15.0)
    """Lateral extent, metres (image left to right)."""
    z_range: Tuple[float, float] = (5.0, 30.0)
    """Forward extent, metres (image bottom to top)."""
    y_range: Tuple[float, float] = (0.0, 1.0)
    """Heights summed, metres below the camera (from camera height to 1 m below)."""
    pixels_per_metre: float = 8.0
    """BEV pixels per metre in x and z."""
    height_levels: int = 64
    """Samples per column (BTS: 64)."""
    threshold: float = BTS_PROFILE_THRESHOLD
    """Cumulative density up to which a level counts as free (BTS: 8)."""
    tilt_deg: float = CAMERA_TILT_DEG
    """Downward camera pitch the grid is corrected for."""

    @property
    def resolution(self) -> Tuple[int, int, int]:
        """``(x_res, z_res, y_res)``."""
        x_res = max(2, round((self.x_range[1] - self.x_range[0]) * self.pixels_per_metre))
        z_res = max(2, round((self.z_range[1] - self.z_range[0]) * self.pixels_per_metre))
        return x_res, z_res, self.height_levels

    def points(self) -> Float[Tensor, "Y Z X 3"]:
        """Camera-frame sample points; row 0 is the far end, as in BTS's figures."""
        far_to_near = (self.z_range[1], self.z_range[0])
        return bev_query_points(self.x_range, far_to_near, self.y_range, self.resolution, self.tilt_deg)


def field_profile(field_: FrameField, grid: BevGrid) -> Float[Tensor, "Z X"]:
    """BTS's profile of a model (or baseline): out-of-image points count as density 1."""
    points = grid.points().to(field_.depth.device)
    flat = points.reshape(-1, 3)
    density = field_.density(flat).reshape(points.shape[:-1])
    invalid = field_.outside_frustum(flat).reshape(points.shape[:-1])
    return bev_profile(density, invalid, grid.threshold)


def scene_profile(
    scene, c2w: Float[Tensor, "4 4"], grid: BevGrid, field_: Optional[FrameField] = None
) -> Float[Tensor, "Z X"]:
    """The same profile from an analytic scene's exact occupancy (solids = high density).

    With ``field_`` the image's frustum is applied as for the model, so the panels compare pixel for pixel.
    """
    device = field_.depth.device if field_ is not None else torch.device("cpu")
    points = grid.points().to(device)
    flat = points.reshape(-1, 3).double()
    c2w = c2w.to(device, torch.float64)
    world = flat @ c2w[:3, :3].T + c2w[:3, 3]
    density = scene.occupied(world).to(device, torch.float32) * SCENE_OCCUPIED_DENSITY
    invalid = None
    if field_ is not None:
        invalid = outside_frustum(flat.float(), field_.K.float().to(device), field_.width, field_.height)
        invalid = invalid.reshape(points.shape[:-1])
    return bev_profile(density.reshape(points.shape[:-1]), invalid, grid.threshold)


def colorize(values: Float[Tensor, "H W"], colormap: str = "magma") -> np.ndarray:
    """uint8 ``[H, W, 3]`` of values in [0, 1] through a matplotlib colormap."""
    from matplotlib import colormaps

    mapped = colormaps[colormap](values.clamp(0, 1).cpu().numpy())[..., :3]
    return (mapped * 255).round().astype(np.uint8)


def colorize_depth(depth: Float[Tensor, "H W"], near: float = 3.0, far: float = 80.0) -> np.ndarray:
    """uint8 ``[H, W, 3]`` inverse-depth colouring (near bright), clipped to ``[near, far]``."""
    inverse = 1.0 / depth.clamp(near, far)
    normalised = (inverse - 1.0 / far) / (1.0 / near - 1.0 / far)
    return colorize(normalised, "magma")


def image_to_uint8(image: Float[Tensor, "3 H W"]) -> np.ndarray:
    return (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _resize(panel: np.ndarray, width: int, height: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(panel).resize((width, height), resample))


def _labelled(panel: np.ndarray, label: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.fromarray(panel)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 7 * len(label) + 6, 14), fill=(0, 0, 0))
    draw.text((3, 1), label, fill=(255, 255, 255))
    return np.asarray(image)


def compose_panels(
    camera_panels: Sequence[Tuple[str, np.ndarray]], bev_panels: Sequence[Tuple[str, np.ndarray]], bev_scale: int = 2
) -> np.ndarray:
    """One image: camera panels stacked on the left, BEV panels (nearest-upscaled) side by side on the right.

    All sizes are made even so the frame can be video-encoded.
    """
    assert bev_panels, "need at least one BEV panel"
    bev_height = bev_panels[0][1].shape[0] * bev_scale
    bevs: List[np.ndarray] = []
    for label, panel in bev_panels:
        width = round(panel.shape[1] * bev_height / panel.shape[0])
        bevs.append(_labelled(_resize(panel, width, bev_height, nearest=True), label))
    columns = []
    if camera_panels:
        each = bev_height // len(camera_panels)
        stacked = []
        for label, panel in camera_panels:
            width = round(panel.shape[1] * each / panel.shape[0])
            stacked.append(_labelled(_resize(panel, width, each, nearest=False), label))
        left_width = max(panel.shape[1] for panel in stacked)
        left = np.zeros((bev_height, left_width, 3), dtype=np.uint8)
        top = 0
        for panel in stacked:
            left[top : top + panel.shape[0], : panel.shape[1]] = panel
            top += panel.shape[0]
        columns.append(left)
    columns.extend(bevs)
    separator = np.full((bev_height, 4, 3), 255, dtype=np.uint8)
    parts = []
    for index, column in enumerate(columns):
        parts.extend([separator, column] if index else [column])
    frame = np.concatenate(parts, axis=1)
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]
