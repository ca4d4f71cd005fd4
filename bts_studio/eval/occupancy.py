"""Occupancy evaluation maths of Behind the Scenes: query grids, lidar reference occupancy, visibility, metrics.

Replicates ``models/bts/evaluator_lidar.py`` of the official code (github.com/Brummi/BehindTheScenes), quirks
included, as framework-free tensor functions. Frames (docs/conventions.md, "Camera axes" and "Occupancy frame"):

    camera frame: the evaluated image's OpenCV camera (x right, y down, +z forward), metres.
    tilted frame: the camera frame rotated by ``CAMERA_TILT_DEG`` about x so that its x-z plane is roughly parallel
        to the road (the KITTI-360 cameras look 5 degrees down); ``p_tilted = R @ p_camera`` with
        ``R = tilt_rotation()``. Query grids are laid out in this frame, y still points down.
    velodyne frame: one lidar scan's own frame (x forward, y left, z up); its x-y plane is the scan's horizontal.

Official-protocol quirks, each replicated on purpose (see ``lidar_reference_occupancy``):
    * the query slice is one level at y = 0.375 m, but the lidar points kept for the surface profile are those with
      tilted-frame height in [0, 0.75] m (the official code asks ``torch.linspace(0, 0.75, 1)``, which is ``[0]``),
      or at least sqrt(20^2 + 4^2) m away from the camera (so far bins are never empty);
    * 360 one-degree bins of the minimum horizontal range; an empty bin inherits the previous bin's range (the
      first bins inherit the range of the point with the smallest angle);
    * the query point's range is the norm of its homogeneous 4-vector in the velodyne frame,
      ``sqrt(x^2 + y^2 + z^2 + 1)``, compared with a purely horizontal lidar range;
    * a scan calls a point occupied when it lies behind the interpolated surface or closer than 3 m;
    * reference occupied <=> (1 + votes) / S > (S - 2) / S for S scans, i.e. at least S - 2 of them (18 of 20);
    * visible <=> the current scan (the first) sees it free, or its camera z <= predicted z-depth at its pixel;
      visible points are reference-empty.
"""

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

CAMERA_TILT_DEG = 5.0
"""KITTI-360's cameras look this many degrees below the horizon (BTS's ``cam_incl_adjust``)."""

OCCUPIED_DENSITY_THRESHOLD = 0.5
"""A predicted density above this counts as occupied."""

OFFICIAL_X_RANGE = (-4.0, 4.0)
OFFICIAL_Y_RANGE = (0.0, 0.75)
"""Metres below the camera in the tilted frame: the query slice is its midpoint, the lidar filter all of it."""
OFFICIAL_Z_RANGE = (20.0, 4.0)
OFFICIAL_POINTS_PER_METRE = 10.0
"""80 x-samples and 160 z-samples: 12,800 query points per image."""
OFFICIAL_NUM_SCANS = 20
OFFICIAL_MIN_RANGE = 3.0
"""Query points closer than this (quirky homogeneous norm) to a scan's velodyne count as occupied by it."""
OFFICIAL_NUM_BINS = 360

METRIC_NAMES = ("o_acc", "o_prec", "o_rec", "ie_acc", "ie_prec", "ie_rec", "ie_r", "t_ie", "t_no_nop_nv")
"""Per-image metrics, in the official names (``t_*`` are point counts, ``ie_r`` the invisible-empty ratio)."""


def tilt_rotation(tilt_deg: float = CAMERA_TILT_DEG, dtype: torch.dtype = torch.float32) -> Float[Tensor, "3 3"]:
    """Rotation from the camera frame to the tilted (road-parallel) frame: ``p_tilted = R @ p_camera``.

    For a camera pitched ``tilt_deg`` downwards, its optical axis has a positive (downward) y in the tilted frame.
    """
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]], dtype=dtype)


def tilted_to_camera(
    points_tilted: Float[Tensor, "*batch 3"], tilt_deg: float = CAMERA_TILT_DEG
) -> Float[Tensor, "*batch 3"]:
    """Express tilted-frame points in the OpenCV camera frame (``p_camera = R^T p_tilted``)."""
    assert points_tilted.shape[-1] == 3, f"expected [..., 3], got {tuple(points_tilted.shape)}"
    rotation = tilt_rotation(tilt_deg, points_tilted.dtype).to(points_tilted.device)
    return points_tilted @ rotation


def axis_samples(start: float, end: float, points_per_metre: float) -> Float[Tensor, " n"]:
    """``int(|end - start| * ppm)`` evenly spaced samples from ``start`` to ``end`` inclusive (BTS's ``get_pts``)."""
    count = abs(int((end - start) * points_per_metre))
    assert count >= 1, f"range {start}..{end} at {points_per_metre}/m has no samples"
    return torch.linspace(start, end, count)


def box_grid(xs: Float[Tensor, " X"], ys: Float[Tensor, " Y"], zs: Float[Tensor, " Z"]) -> Float[Tensor, "Y Z X 3"]:
    """All combinations of the axis samples, laid out ``[y, z, x]`` like BTS's grids."""
    y, z, x = torch.meshgrid(ys, zs, xs, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def official_query_points() -> Float[Tensor, "1 160 80 3"]:
    """The lidar protocol's query slice in the tilted frame: y = 0.375 m, z from 20 down to 4 m, x from -4 to 4 m."""
    xs = axis_samples(*OFFICIAL_X_RANGE, OFFICIAL_POINTS_PER_METRE)
    zs = axis_samples(*OFFICIAL_Z_RANGE, OFFICIAL_POINTS_PER_METRE)
    ys = torch.tensor([0.5 * (OFFICIAL_Y_RANGE[0] + OFFICIAL_Y_RANGE[1])])
    return box_grid(xs, ys, zs)


def official_max_range() -> float:
    """Lidar points at least this far from the camera enter every profile: sqrt(20^2 + 4^2) = 20.396 m."""
    return math.hypot(OFFICIAL_Z_RANGE[0], OFFICIAL_X_RANGE[0])


def transform_points(transform: Float[Tensor, "4 4"], points: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3"]:
    """Apply a ``[4, 4]`` (or ``[3, 4]``) affine transform to row points."""
    assert points.ndim == 2 and points.shape[-1] == 3, f"expected [N, 3], got {tuple(points.shape)}"
    assert transform.shape[-1] == 4 and transform.shape[-2] in (3, 4), f"bad transform {tuple(transform.shape)}"
    return points @ transform[:3, :3].T + transform[:3, 3]


def profile_point_mask(
    points_tilted: Float[Tensor, "M 3"], height_range: Tuple[float, float], max_range: float
) -> Bool[Tensor, " M"]:
    """Lidar points that shape the polar profile: tilted-frame y in ``height_range`` or 3D range >= ``max_range``.

    Points far away are kept whatever their height so that bins towards the far end of the grid are not empty.
    """
    assert (
        points_tilted.ndim == 2 and points_tilted.shape[-1] == 3
    ), f"expected [M, 3], got {tuple(points_tilted.shape)}"
    y = points_tilted[:, 1]
    in_slice = (y >= height_range[0]) & (y <= height_range[1])
    return in_slice | (points_tilted.norm(dim=-1) >= max_range)


def polar_surface_profile(
    points_velo_xy: Float[Tensor, "M 2"], num_bins: int = OFFICIAL_NUM_BINS
) -> Float[Tensor, "B 2"]:
    """Per-angle distance of the nearest lidar return, as BTS's ``get_lidar_slices`` builds it.

    Args:
        points_velo_xy: the selected returns' horizontal velodyne coordinates.
        num_bins: bins over ``[-pi, pi)``; the official value is 360 (one degree each).

    Returns:
        ``[num_bins + 2, 2]`` rows of (bin-centre angle, minimum horizontal range), ascending in angle. An empty
        bin inherits the previous bin's range; leading empty bins take the range of the smallest-angle return.
        The first and last row wrap around (last bin at ``angle - 2 pi``, first at ``angle + 2 pi``) so that every
        angle in ``[-pi, pi]`` can be interpolated.
    """
    assert points_velo_xy.ndim == 2 and points_velo_xy.shape[-1] == 2, f"expected [M, 2], got {points_velo_xy.shape}"
    if points_velo_xy.shape[0] == 0:
        raise ValueError("lidar scan has no returns in the profile slice (and none beyond the far range)")
    angles = torch.atan2(points_velo_xy[:, 1], points_velo_xy[:, 0])
    ranges = points_velo_xy.norm(dim=-1)
    borders = torch.linspace(-math.pi, math.pi, num_bins + 1, dtype=angles.dtype, device=angles.device)
    # bin i holds borders[i] <= angle < borders[i + 1]; an angle of exactly +pi falls in no bin, as in BTS.
    bins = torch.bucketize(angles, borders, right=True) - 1
    in_range = (bins >= 0) & (bins < num_bins)
    bin_min = torch.full((num_bins,), math.inf, dtype=ranges.dtype, device=ranges.device)
    bin_min = bin_min.scatter_reduce(0, bins[in_range], ranges[in_range], reduce="amin")
    filled = torch.isfinite(bin_min)
    last_filled = torch.where(filled, torch.arange(num_bins, device=ranges.device), -1).cummax(dim=0).values
    first_return_range = ranges[torch.argmin(angles)]
    bin_ranges = torch.where(last_filled >= 0, bin_min[last_filled.clamp_min(0)], first_return_range)
    centres = (borders[:-1] + borders[1:]) * 0.5
    profile = torch.stack([centres, bin_ranges], dim=-1)
    wrap_before = torch.stack([centres[-1] - 2 * math.pi, bin_ranges[-1]])[None]
    wrap_after = torch.stack([centres[0] + 2 * math.pi, bin_ranges[0]])[None]
    return torch.cat([wrap_before, profile, wrap_after], dim=0)


def occupied_by_scan(
    query_velo: Float[Tensor, "N 3"], profile: Float[Tensor, "B 2"], min_range: float = OFFICIAL_MIN_RANGE
) -> Bool[Tensor, " N"]:
    """One scan's vote: the query lies behind the interpolated surface, or closer than ``min_range``.

    The query range is ``sqrt(x^2 + y^2 + z^2 + 1)`` (BTS takes the norm of the homogeneous 4-vector) while the
    surface range is horizontal; replicated on purpose.
    """
    assert query_velo.ndim == 2 and query_velo.shape[-1] == 3, f"expected [N, 3], got {tuple(query_velo.shape)}"
    assert profile.ndim == 2 and profile.shape[-1] == 2, f"expected [B, 2], got {tuple(profile.shape)}"
    angles = torch.atan2(query_velo[:, 1], query_velo[:, 0])
    ranges = torch.sqrt((query_velo**2).sum(dim=-1) + 1.0)
    right = torch.searchsorted(profile[:, 0].contiguous(), angles).clamp(1, profile.shape[0] - 1)
    left_angle, right_angle = profile[right - 1, 0], profile[right, 0]
    left_range, right_range = profile[right - 1, 1], profile[right, 1]
    weight = (angles - left_angle) / (right_angle - left_angle)
    surface = left_range * (1 - weight) + right_range * weight
    return (ranges > surface) | (ranges < min_range)


def lidar_reference_occupancy(
    query_tilted: Float[Tensor, "N 3"],
    scans_velo: Sequence[Float[Tensor, "_M 3"]],
    velo_to_tilted: Float[Tensor, "S 4 4"],
    height_range: Tuple[float, float] = OFFICIAL_Y_RANGE,
    max_range: float | None = None,
    min_range: float = OFFICIAL_MIN_RANGE,
    num_bins: int = OFFICIAL_NUM_BINS,
) -> Tuple[Bool[Tensor, " N"], Bool[Tensor, " N"]]:
    """Reference occupancy from accumulated lidar scans (BTS's ``get_lidar_slices`` + ``check_occupancy``).

    Args:
        query_tilted: query points in the tilted frame.
        scans_velo: ``S`` scans, each in its own velodyne frame; the first is the evaluated image's current scan.
        velo_to_tilted: each scan's velodyne-to-tilted-frame transform (the KITTI-360 calibration chain).
        height_range: tilted-frame heights (y down) whose returns shape the profile; official ``(0, 0.75)``.
        max_range: returns at least this far from the camera always shape it; default ``official_max_range()``.
        min_range: see ``occupied_by_scan``.
        num_bins: see ``polar_surface_profile``.

    Returns:
        ``occupied``: at least ``S - 2`` scans see the point occupied (BTS: ``(1 + votes) / S > (S - 2) / S``);
        ``visible_by_scan``: the current scan sees the point free. ``occupied`` is not yet masked by visibility.
    """
    assert query_tilted.ndim == 2 and query_tilted.shape[-1] == 3, f"expected [N, 3], got {tuple(query_tilted.shape)}"
    num_scans = len(scans_velo)
    assert num_scans >= 1 and velo_to_tilted.shape == (
        num_scans,
        4,
        4,
    ), f"need one [4, 4] transform per scan: {num_scans} scans, transforms {tuple(velo_to_tilted.shape)}"
    max_range = official_max_range() if max_range is None else max_range
    tilted_to_velo = torch.linalg.inv(velo_to_tilted)
    votes = torch.zeros(query_tilted.shape[0], dtype=torch.long, device=query_tilted.device)
    visible_by_scan = torch.zeros(query_tilted.shape[0], dtype=torch.bool, device=query_tilted.device)
    for index, scan in enumerate(scans_velo):
        assert scan.ndim == 2 and scan.shape[-1] == 3, f"scan {index}: expected [M, 3], got {tuple(scan.shape)}"
        keep = profile_point_mask(transform_points(velo_to_tilted[index], scan), height_range, max_range)
        try:
            profile = polar_surface_profile(scan[keep, :2], num_bins)
        except ValueError as error:
            raise ValueError(f"scan {index} of {num_scans}: {error}") from error
        scan_occupied = occupied_by_scan(transform_points(tilted_to_velo[index], query_tilted), profile, min_range)
        votes += scan_occupied.long()
        if index == 0:
            visible_by_scan = ~scan_occupied
    # (1 + votes) / S > (S - 2) / S, written in integers (same numerator comparison, no float rounding).
    occupied = (1 + votes) > (num_scans - 2)
    return occupied, visible_by_scan


def sample_depth_nearest(
    points_camera: Float[Tensor, "N 3"], K: Float[Tensor, "3 3"], depth: Float[Tensor, "H W"]
) -> Tuple[Float[Tensor, " N"], Float[Tensor, " N"]]:
    """Z-depth of the pixel each point projects into (clamped to the border), and the point's own camera z.

    ``K`` is in nerfstudio pixel units, so the pixel containing continuous coordinate ``u`` is ``floor(u)``
    (docs/conventions.md, "Pixels"); points outside the image take the nearest border pixel, as BTS's
    ``grid_sample(mode="nearest", padding_mode="border")``.
    """
    assert points_camera.ndim == 2 and points_camera.shape[-1] == 3, f"expected [N, 3], got {points_camera.shape}"
    assert K.shape == (3, 3) and depth.ndim == 2, f"K {tuple(K.shape)}, depth {tuple(depth.shape)}"
    height, width = depth.shape
    z = points_camera[:, 2]
    image = points_camera @ K.T.to(points_camera)
    uv = image[:, :2] / z.clamp_min(1e-6)[:, None]
    column = torch.floor(uv[:, 0]).clamp(0, width - 1).long()
    row = torch.floor(uv[:, 1]).clamp(0, height - 1).long()
    return depth[row, column], z


def visible_before_depth(
    points_camera: Float[Tensor, "N 3"], K: Float[Tensor, "3 3"], depth: Float[Tensor, "H W"]
) -> Bool[Tensor, " N"]:
    """A point is visible to the model when its camera z is at most the predicted z-depth at its pixel."""
    sampled, z = sample_depth_nearest(points_camera, K, depth)
    return z <= sampled


def depth_band_occupancy(
    points_camera: Float[Tensor, "N 3"], K: Float[Tensor, "3 3"], depth: Float[Tensor, "H W"], band: float = 4.0
) -> Bool[Tensor, " N"]:
    """The "Depth + 4 m" baseline: occupied when the point lies behind the predicted depth by at most ``band``."""
    sampled, z = sample_depth_nearest(points_camera, K, depth)
    return (z > sampled) & (z <= sampled + band)


def outside_frustum(
    points_camera: Float[Tensor, "N 3"], K: Float[Tensor, "3 3"], width: int, height: int, min_z: float = 1e-3
) -> Bool[Tensor, " N"]:
    """Points the image does not see: behind ``min_z`` or projecting outside ``[0, W] x [0, H]`` (BTS's invalid)."""
    assert points_camera.ndim == 2 and points_camera.shape[-1] == 3, f"expected [N, 3], got {points_camera.shape}"
    z = points_camera[:, 2]
    image = points_camera @ K.T.to(points_camera)
    uv = image[:, :2] / z.clamp_min(min_z)[:, None]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= width) & (uv[:, 1] >= 0) & (uv[:, 1] <= height)
    return (z <= min_z) | ~inside


def _mean(values: Bool[Tensor, " n"]) -> float:
    """Mean of a boolean selection; NaN when it is empty (BTS averages over images and skips NaNs)."""
    return values.float().mean().item() if values.numel() > 0 else math.nan


def occupancy_metrics(
    pred_occupied: Bool[Tensor, " N"], gt_occupied: Bool[Tensor, " N"], visible: Bool[Tensor, " N"]
) -> Dict[str, float]:
    """One image's occupancy metrics, in BTS's definitions.

    Visible points are forced to reference-empty first (BTS: "only not visible points can be occupied").

    Returns:
        ``o_acc`` (accuracy over all points), ``o_prec``/``o_rec`` (occupied precision/recall), ``ie_acc``
        (accuracy over invisible points), ``ie_prec``/``ie_rec`` (precision/recall of "invisible and empty"),
        ``ie_r`` (share of invisible-empty points), ``t_ie`` (their count), ``t_no_nop_nv`` (how many of them
        are predicted empty). Undefined ratios are NaN.
    """
    assert (
        pred_occupied.shape == gt_occupied.shape == visible.shape and pred_occupied.ndim == 1
    ), f"shapes differ: pred {tuple(pred_occupied.shape)}, gt {tuple(gt_occupied.shape)}, visible {visible.shape}"
    gt = gt_occupied & ~visible
    pred = pred_occupied
    invisible = ~visible
    invisible_empty = ~gt & invisible
    correct = pred == gt
    return {
        "o_acc": _mean(correct),
        "o_prec": _mean(gt[pred]),
        "o_rec": _mean(pred[gt]),
        "ie_acc": _mean(correct[invisible]),
        "ie_prec": _mean(~gt[~pred & invisible]),
        "ie_rec": _mean(~pred[invisible_empty]),
        "ie_r": _mean(invisible_empty),
        "t_ie": float(invisible_empty.sum().item()),
        "t_no_nop_nv": float((~pred & invisible_empty).sum().item()),
    }


def mean_metrics(per_image: List[Dict[str, Any]]) -> Dict[str, float]:
    """Average per-image metrics over images, skipping NaNs per metric (BTS's ``MeanMetric``); other keys of a row
    (sequence, frame id) are ignored.

    Returns the means plus ``n_frames`` (images averaged) and ``n_<metric>`` where a metric skipped some images.
    """
    summary: Dict[str, float] = {"n_frames": float(len(per_image))}
    for name in METRIC_NAMES:
        values = [entry[name] for entry in per_image if not math.isnan(entry[name])]
        summary[name] = sum(values) / len(values) if values else math.nan
        if len(values) != len(per_image):
            summary[f"n_{name}"] = float(len(values))
    return summary
