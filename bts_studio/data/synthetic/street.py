"""A procedural street: a gently curving road lined with sidewalks, facades, parked cars, trees and poles.

The street's centreline is a circular arc (constant curvature), so a world point's street coordinates
``(s, l)`` -- arc length along the centreline and lateral offset (positive to the left of the driving
direction) -- are exact and cheap to compute; the renderer uses them for road markings and materials.
Everything solid is an analytic primitive (:mod:`bts_studio.data.synthetic.primitives`), so depth and
occupancy are exact. Coordinates are world coordinates in metres, z up (KITTI-360's world frame).
"""

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor

from bts_studio.data.synthetic.primitives import (
    Primitive,
    make_box,
    make_ellipsoid,
    make_ground,
    make_vertical_cylinder,
    rotation_z,
)

ROAD_HALF_WIDTH = 5.0
"""Road from l = -5 to 5 m: two lanes plus a parking strip on each side."""
SIDEWALK_WIDTH = 3.5
EGO_LATERAL = -1.7
"""The ego vehicle drives in the right lane, as in Karlsruhe."""
PARKING_LATERAL = 4.0
IMU_HEIGHT = 0.90
"""Height of the IMU/GPS "pose" frame above the road; puts camera 0 about 1.55 m above it."""


@dataclass(frozen=True)
class StreetLayout:
    """The street's centreline (a circular arc) and cross-section; JSON-serialisable via ``asdict``.

    Attributes:
        start: world ``(x, y)`` of the centreline at ``s = 0``.
        start_heading: heading (radians, from +x towards +y) of the centreline at ``s = 0``.
        curvature: signed curvature, 1/m (positive turns left).
        ground_z: world height of the road surface.
        s_min, s_max: extent of the modelled street along the centreline.
        side_streets: ``(side, s_begin, s_end)`` openings; side is +1 (left) or -1 (right).
    """

    start: Tuple[float, float]
    start_heading: float
    curvature: float
    ground_z: float
    s_min: float
    s_max: float
    road_half_width: float = ROAD_HALF_WIDTH
    sidewalk_width: float = SIDEWALK_WIDTH
    side_streets: Tuple[Tuple[int, float, float], ...] = ()

    @property
    def radius(self) -> float:
        """Signed radius 1/curvature."""
        return 1.0 / self.curvature

    def _center(self) -> np.ndarray:
        heading = self.start_heading
        left = np.array([-math.sin(heading), math.cos(heading)])
        return np.asarray(self.start, dtype=np.float64) + self.radius * left

    def heading(self, s: float) -> float:
        return self.start_heading + self.curvature * s

    def point(self, s: float, lateral: float) -> np.ndarray:
        """World ``(x, y)`` of street coordinates ``(s, lateral)``."""
        heading = self.heading(s)
        left = np.array([-math.sin(heading), math.cos(heading)])
        return self._center() - (self.radius - lateral) * left

    def coordinates(self, xy: Tensor, origin_xy: Tuple[float, float] = (0.0, 0.0)) -> Tuple[Tensor, Tensor]:
        """Street coordinates ``(s, l)`` of points ``[..., 2]`` given relative to ``origin_xy`` (world).

        Pass points relative to a nearby origin (e.g. the scene's) to keep float32 precise: KITTI-360 worlds
        sit kilometres from their origin.
        """
        center = torch.as_tensor(self._center() - np.asarray(origin_xy), dtype=xy.dtype, device=xy.device)
        offset = xy - center
        distance = offset.norm(dim=-1)
        sign = 1.0 if self.radius > 0 else -1.0
        # p - C = -(R - l) n(heading), with the left normal n = (-sin, cos) and |l| < |R| inside the street.
        normal = -sign * offset / distance.clamp_min(1e-9)[..., None]
        heading = torch.atan2(-normal[..., 0], normal[..., 1])
        turned = torch.remainder(heading - self.start_heading + math.pi, 2 * math.pi) - math.pi
        return turned / self.curvature, self.radius - sign * distance

    def side_street_mask(self, s: Tensor, lateral: Tensor) -> Tensor:
        """Points beyond the road edge that lie in a side street's opening."""
        mask = torch.zeros_like(s, dtype=torch.bool)
        for side, begin, end in self.side_streets:
            mask |= (side * lateral > self.road_half_width) & (s >= begin) & (s <= end)
        return mask

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "StreetLayout":
        values = dict(data)
        values["start"] = tuple(values["start"])
        values["side_streets"] = tuple(tuple(item) for item in values.get("side_streets", ()))
        return cls(**values)


@dataclass
class StreetWorld:
    """Primitives of one street plus its layout; ``primitives[i]`` has id ``i`` in the scene."""

    layout: StreetLayout
    primitives: List[Primitive] = field(default_factory=list)
    sun_direction: Tuple[float, float, float] = (0.3, 0.2, 0.93)


def _hsv(rng: np.random.Generator, hue: Tuple[float, float], sat: Tuple[float, float], val: Tuple[float, float]):
    import colorsys

    return tuple(float(c) for c in colorsys.hsv_to_rgb(rng.uniform(*hue), rng.uniform(*sat), rng.uniform(*val)))


def _in_side_street(layout: StreetLayout, side: int, s: float, margin: float) -> bool:
    return any(sd == side and begin - margin <= s <= end + margin for sd, begin, end in layout.side_streets)


def _material(name: str, rng: np.random.Generator, **extra: Any) -> Dict[str, Any]:
    # A per-primitive texture offset makes equal materials look different (no repeated surfaces).
    return {"material": name, "texture_offset": [float(v) for v in rng.uniform(0, 1000, size=2)], **extra}


def _buildings(layout: StreetLayout, rng: np.random.Generator, out: List[Primitive]) -> None:
    front_base = layout.road_half_width + layout.sidewalk_width
    for side in (1, -1):
        s = layout.s_min
        while s < layout.s_max:
            inside = [end for sd, begin, end in layout.side_streets if sd == side and begin <= s < end]
            if inside:
                s = max(inside) + 0.5
                continue
            if rng.random() < 0.3:
                s += rng.uniform(2.0, 6.0)  # a gap between buildings
            upcoming = [begin for sd, begin, _ in layout.side_streets if sd == side and begin >= s]
            next_opening = min(upcoming, default=math.inf)
            length = min(rng.uniform(8.0, 24.0), next_opening - 0.5 - s)
            if length < 3.0:
                s = next_opening
                continue
            depth, height = rng.uniform(8.0, 14.0), rng.uniform(7.0, 21.0)
            front = front_base + rng.uniform(0.0, 1.2)
            center_s = s + length / 2
            xy = layout.point(center_s, side * (front + depth / 2))
            out.append(
                make_box(
                    (xy[0], xy[1], layout.ground_z + height / 2),
                    (length / 2, depth / 2, height / 2),
                    yaw=layout.heading(center_s),
                    label="building",
                    color=_hsv(rng, (0.02, 0.14), (0.1, 0.45), (0.55, 0.9)),
                    attributes=_material(
                        "facade",
                        rng,
                        window_spacing=float(rng.uniform(2.6, 3.8)),
                        floor_height=float(rng.uniform(2.8, 3.4)),
                        window_color=list(_hsv(rng, (0.55, 0.65), (0.2, 0.4), (0.15, 0.35))),
                    ),
                )
            )
            s += length
        # A second row far back, seen through gaps and side streets.
        s = layout.s_min
        while s < layout.s_max:
            length = rng.uniform(20.0, 40.0)
            lateral = side * rng.uniform(32.0, 45.0)
            height = rng.uniform(10.0, 26.0)
            xy = layout.point(s + length / 2, lateral)
            out.append(
                make_box(
                    (xy[0], xy[1], layout.ground_z + height / 2),
                    (length / 2, rng.uniform(5.0, 9.0), height / 2),
                    yaw=layout.heading(s + length / 2),
                    label="building",
                    color=_hsv(rng, (0.0, 0.15), (0.05, 0.35), (0.5, 0.85)),
                    attributes=_material(
                        "facade",
                        rng,
                        window_spacing=float(rng.uniform(2.6, 3.8)),
                        floor_height=3.0,
                        window_color=list(_hsv(rng, (0.55, 0.65), (0.2, 0.4), (0.15, 0.35))),
                    ),
                )
            )
            s += length + rng.uniform(0.0, 8.0)


def _car(layout: StreetLayout, rng: np.random.Generator, s: float, side: int, out: List[Primitive]) -> None:
    length, width = rng.uniform(3.9, 4.7), rng.uniform(1.7, 1.9)
    heading = layout.heading(s) + (0.0 if side < 0 else math.pi) + rng.normal(0.0, 0.03)
    lateral = side * (PARKING_LATERAL + rng.uniform(-0.15, 0.15))
    xy = layout.point(s, lateral)
    color = _hsv(rng, (0.0, 1.0), (0.0, 0.8), (0.15, 0.95))
    ground = layout.ground_z
    body_bottom, body_top = 0.28, rng.uniform(0.95, 1.1)
    out.append(
        make_box(
            (xy[0], xy[1], ground + (body_bottom + body_top) / 2),
            (length / 2, width / 2, (body_top - body_bottom) / 2),
            yaw=heading,
            label="car",
            color=color,
            attributes=_material("car_body", rng),
        )
    )
    cabin_length, cabin_height = length * rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.6)
    forward = np.array([math.cos(heading), math.sin(heading)])
    cabin_xy = xy - forward * length * 0.06
    out.append(
        make_box(
            (cabin_xy[0], cabin_xy[1], ground + body_top + cabin_height / 2),
            (cabin_length / 2, width / 2 * 0.9, cabin_height / 2),
            yaw=heading,
            label="car",
            color=color,
            attributes=_material("car_cabin", rng),
        )
    )
    wheel_radius = 0.32
    # One cylinder per axle, its axis (local z) across the car: its ends are the wheels, the body hides the
    # middle (half the primitives of four separate wheels). Rotate an upright cylinder 90 deg about x.
    yaw = np.array(rotation_z(heading)).reshape(3, 3)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    rotation = tuple(float(v) for v in (yaw @ tilt).flatten())
    for along in (0.34, -0.34):
        axle = xy + forward * along * length
        out.append(
            Primitive(
                "cylinder",
                (axle[0], axle[1], ground + wheel_radius),
                (wheel_radius, wheel_radius, width / 2 - 0.02),
                rotation,
                label="car",
                color=(0.05, 0.05, 0.05),
                attributes=_material("rubber", rng),
            )
        )


def _parked_cars(layout: StreetLayout, rng: np.random.Generator, out: List[Primitive]) -> None:
    for side in (1, -1):
        s = layout.s_min + rng.uniform(0.0, 6.0)
        while s < layout.s_max:
            if not _in_side_street(layout, side, s, margin=4.0) and rng.random() < 0.65:
                _car(layout, rng, s, side, out)
            s += rng.uniform(5.5, 9.0)


def _trees_and_poles(layout: StreetLayout, rng: np.random.Generator, out: List[Primitive]) -> None:
    edge = layout.road_half_width
    for side in (1, -1):
        s = layout.s_min + rng.uniform(0.0, 10.0)
        while s < layout.s_max:
            if not _in_side_street(layout, side, s, margin=2.0):
                ground = layout.ground_z
                if rng.random() < 0.6:
                    xy = layout.point(s, side * (edge + 1.0))
                    trunk_height = rng.uniform(2.2, 3.2)
                    out.append(
                        make_vertical_cylinder(
                            (xy[0], xy[1], ground + trunk_height / 2),
                            rng.uniform(0.12, 0.2),
                            trunk_height / 2,
                            label="vegetation",
                            color=_hsv(rng, (0.06, 0.1), (0.4, 0.6), (0.25, 0.4)),
                            attributes=_material("bark", rng),
                        )
                    )
                    radii = (rng.uniform(1.4, 2.3), rng.uniform(1.4, 2.3), rng.uniform(1.6, 2.6))
                    out.append(
                        make_ellipsoid(
                            (xy[0], xy[1], ground + trunk_height + radii[2] * 0.8),
                            radii,
                            yaw=rng.uniform(0, math.pi),
                            label="vegetation",
                            color=_hsv(rng, (0.2, 0.32), (0.45, 0.75), (0.3, 0.6)),
                            attributes=_material("foliage", rng),
                        )
                    )
                else:
                    xy = layout.point(s, side * (edge + 0.5))
                    height = rng.uniform(4.5, 7.0)
                    out.append(
                        make_vertical_cylinder(
                            (xy[0], xy[1], ground + height / 2),
                            rng.uniform(0.06, 0.1),
                            height / 2,
                            label="pole",
                            color=_hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.35, 0.6)),
                            attributes=_material("metal", rng),
                        )
                    )
            s += rng.uniform(9.0, 20.0)


WORLDS = ("street", "one-car")
"""street: the default street; one-car: the same facades but a single parked car and no trees, poles or side
streets (an occluder the model must see behind, isolated: the regression check of issue #18)."""


def one_car_position(drive_length: float) -> float:
    """Arc length of the one-car world's parked car: half-way along the drive plus 10 m, so that the middle input
    frames have it 5-15 m ahead (inside the occupancy cuboid, z 3..20 m) and the fisheyes at t+10 pass it."""
    return 0.5 * drive_length + 10.0


def build_street(
    rng: np.random.Generator,
    drive_length: float,
    origin_xy: Tuple[float, float],
    ground_z: float,
    world: str = "street",
) -> StreetWorld:
    """Lay out a street long enough for a drive of ``drive_length`` metres starting at ``s = 0``.

    Args:
        rng: the only source of randomness (determinism for a seed).
        drive_length: metres the ego vehicle will drive.
        origin_xy: world ``(x, y)`` of the start (KITTI-360 worlds sit far from their origin).
        ground_z: world height of the road.
        world: one of :data:`WORLDS`.

    Raises:
        ValueError: ``world`` is not one of :data:`WORLDS`.
    """
    if world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
    radius = rng.uniform(120.0, 300.0) * rng.choice([-1.0, 1.0])
    s_min, s_max = -40.0, drive_length + 90.0
    side_streets = []
    for side in (1, -1):
        s = rng.uniform(5.0, 30.0)
        while s < s_max - 20.0:
            width = rng.uniform(8.0, 12.0)
            side_streets.append((side, float(s), float(s + width)))
            s += width + rng.uniform(35.0, 70.0)
    if world == "one-car":
        side_streets = []  # nothing but facades around the one car
    layout = StreetLayout(
        start=(float(origin_xy[0]), float(origin_xy[1])),
        start_heading=float(rng.uniform(-math.pi, math.pi)),
        curvature=float(1.0 / radius),
        ground_z=float(ground_z),
        s_min=s_min,
        s_max=float(s_max),
        side_streets=tuple(side_streets),
    )
    primitives: List[Primitive] = [
        make_ground(ground_z, label="ground", color=(0.3, 0.3, 0.3), attributes={"material": "ground"})
    ]
    _buildings(layout, rng, primitives)
    if world == "one-car":
        _car(layout, rng, one_car_position(drive_length), -1, primitives)  # right side, next to the ego lane
    else:
        _parked_cars(layout, rng, primitives)
        _trees_and_poles(layout, rng, primitives)
    elevation, azimuth = rng.uniform(math.radians(35), math.radians(60)), rng.uniform(-math.pi, math.pi)
    sun = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    return StreetWorld(layout=layout, primitives=primitives, sun_direction=sun)


def ego_poses(layout: StreetLayout, frames: int, stationary_frames: int, rng: np.random.Generator) -> np.ndarray:
    """IMU/GPS "pose" frame -> world for every frame, ``[frames, 4, 4]`` float64.

    The pose frame is KITTI-360's: x forward, y right, z down. The vehicle stands still for
    ``stationary_frames`` frames (KITTI-360 leaves such frames out of ``poses.txt``), then drives about
    1 m per frame with a slowly varying speed, a small sway, and slight pitch and roll.
    """
    speeds = 1.0 + 0.08 * np.sin(np.arange(frames) * 0.11 + rng.uniform(0, 6.28))
    travelled = np.concatenate([[0.0], np.cumsum(speeds[:-1])])
    travelled = np.where(
        np.arange(frames) < stationary_frames, 0.0, travelled - travelled[min(stationary_frames, frames - 1)]
    )
    phase = rng.uniform(0, 6.28, size=4)
    poses = np.zeros((frames, 4, 4))
    flip = np.diag([1.0, -1.0, -1.0])  # FLU body axes -> KITTI-360 pose axes (x forward, y right, z down)
    for index, s in enumerate(travelled):
        lateral = EGO_LATERAL + 0.08 * math.sin(0.05 * s + phase[0])
        yaw = layout.heading(s) + 0.01 * math.sin(0.09 * s + phase[1])
        pitch = math.radians(0.4) * math.sin(0.13 * s + phase[2])
        roll = math.radians(0.3) * math.sin(0.17 * s + phase[3])
        cy, sy, cp, sp, cr, sr = (
            math.cos(yaw),
            math.sin(yaw),
            math.cos(pitch),
            math.sin(pitch),
            math.cos(roll),
            math.sin(roll),
        )
        rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
        xy = layout.point(s, lateral)
        poses[index, :3, :3] = rz @ ry @ rx @ flip
        poses[index, :3, 3] = (xy[0], xy[1], layout.ground_z + IMU_HEIGHT)
        poses[index, 3, 3] = 1.0
    return poses
