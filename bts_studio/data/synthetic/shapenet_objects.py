"""Procedural object classes built from analytic parts: cars (body, cabin, wheels) and chairs (seat, back, legs).

Each instance is a tuple of analytic :class:`~bts_studio.data.synthetic.primitives.Primitive` parts
(oriented boxes and capped cylinders, each with a colour and a part label) in a
canonical z-up frame (cars drive along +x, chairs face -x). :func:`place` turns an instance into one of
the world frames the formats use: SRN's (z-up, bounding box centred, unit diagonal like ShapeNet
meshes) or DVR's (y-up, centred, longest side 1 so it fills the unit cube). docs/conventions.md,
"ShapeNet (SRN and DVR)".
"""

import colorsys
import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Literal, Sequence, Tuple, Union

import numpy as np

from bts_studio.data.synthetic.primitives import IDENTITY, Primitive, Scene

Vector = Tuple[float, float, float]


def primitive_bounds(primitive: Primitive) -> Tuple[np.ndarray, np.ndarray]:
    """Axis-aligned ``(min, max)`` corners of a box, cylinder or ellipsoid (exact for boxes and cylinders)."""
    rotation = np.asarray(primitive.rotation, dtype=np.float64).reshape(3, 3)
    half = np.asarray(primitive.size, dtype=np.float64)
    if primitive.kind == "box":
        extent = np.abs(rotation) @ half
    elif primitive.kind == "cylinder":
        axis = rotation[:, 2]
        extent = half[2] * np.abs(axis) + half[0] * np.sqrt(np.clip(1.0 - axis**2, 0.0, None))
    elif primitive.kind == "ellipsoid":
        extent = np.sqrt((rotation**2) @ (half**2))
    else:
        raise ValueError(f"an object part cannot be a {primitive.kind}")
    center = np.asarray(primitive.center, dtype=np.float64)
    return center - extent, center + extent


@dataclass(frozen=True)
class ObjectInstance:
    """One generated object: its class and parts."""

    class_name: str
    parts: Tuple[Primitive, ...]
    to_world: Tuple[float, ...] = IDENTITY
    """Row-major rotation from the canonical z-up frame to this instance's frame (set by :func:`place`)."""

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        lows, highs = zip(*(primitive_bounds(part) for part in self.parts), strict=True)
        return np.min(lows, axis=0), np.max(highs, axis=0)

    def scene(self) -> Scene:
        """The parts as a ray-castable :class:`Scene` (world origin kept, the objects are small)."""
        return Scene(self.parts, origin=(0.0, 0.0, 0.0))


def rotation_about(axis: Literal["x", "y", "z"], angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about a coordinate axis."""
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _flat(matrix: Union[np.ndarray, Sequence[float]]) -> Tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(matrix).reshape(-1))


def _random_color(rng: np.random.Generator, saturation: Tuple[float, float], value: Tuple[float, float]) -> Vector:
    # Values stay below 0.92 so a shaded surface is never the pure white of the background.
    hue = rng.uniform(0.0, 1.0)
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))
    return tuple(float(min(channel, 0.92)) for channel in rgb)  # type: ignore[return-value]


def _box(name: str, center: Vector, half: Vector, color: Vector, rotation: np.ndarray | None = None) -> Primitive:
    rows = _flat(rotation) if rotation is not None else IDENTITY
    return Primitive("box", _flat(center), _flat(half), rows, label=name, color=color)  # type: ignore[arg-type]


def _cylinder(
    name: str, center: Vector, radius: float, half_height: float, color: Vector, rotation: np.ndarray
) -> Primitive:
    half = (float(radius), float(radius), float(half_height))
    return Primitive("cylinder", _flat(center), half, _flat(rotation), label=name, color=color)  # type: ignore[arg-type]


def _wheels(length: float, width: float, radius: float, half_width: float, inset: float) -> List[Primitive]:
    """Four wheels (tyre-coloured cylinders across the car), ``inset`` from each end, touching the ground."""
    tyre = (0.08, 0.08, 0.09)
    axis = rotation_about("x", math.pi / 2)  # cylinder axis (local z) along the car's width
    return [
        _cylinder("wheel", (sx * (length / 2 - inset), sy * (width / 2 - half_width * 0.6), radius), radius,
                  half_width, tyre, axis)
        for sx in (-1.0, 1.0) for sy in (-1.0, 1.0)
    ]  # fmt: skip


def sample_car(rng: np.random.Generator) -> ObjectInstance:
    """A car: a body box, a glass cabin under a roof (sometimes with a sloped windscreen) and four wheels.

    Units are about metres before :func:`place` normalises the size; length, width, heights, wheel
    size and placement, cabin length/offset and the body colour all vary.
    """
    length = rng.uniform(3.6, 5.0)
    width = rng.uniform(1.55, 2.0)
    clearance = rng.uniform(0.12, 0.3)
    body_height = rng.uniform(0.45, 0.8)
    wheel_radius = rng.uniform(0.28, 0.42)
    wheel_half_width = rng.uniform(0.09, 0.15)
    body_color = _random_color(rng, (0.4, 0.95), (0.5, 0.92))
    glass_color = _random_color(rng, (0.1, 0.35), (0.2, 0.4))

    body_center = (0.0, 0.0, clearance + body_height / 2)
    parts = [_box("body", body_center, (length / 2, width / 2, body_height / 2), body_color)]

    cabin_length = length * rng.uniform(0.38, 0.62)
    cabin_height = rng.uniform(0.35, 0.65)
    cabin_x = length * rng.uniform(-0.18, 0.06)
    cabin_z = clearance + body_height + cabin_height / 2
    cabin_half = (cabin_length / 2, width * rng.uniform(0.38, 0.47), cabin_height / 2)
    parts.append(_box("cabin", (cabin_x, 0.0, cabin_z), cabin_half, glass_color))
    # A body-coloured roof slightly wider than the glass, so the cabin reads as windows under a roof.
    roof_half = (cabin_half[0] * rng.uniform(0.85, 1.0), cabin_half[1] * 1.04, rng.uniform(0.025, 0.05))
    parts.append(_box("roof", (cabin_x, 0.0, cabin_z + cabin_half[2]), roof_half, body_color))
    if rng.uniform() < 0.5:
        # A tilted slab over the cabin's front edge reads as a sloped windscreen.
        tilt = rng.uniform(0.35, 0.7)
        slab_half = (cabin_height / 2 / math.cos(tilt) * 0.9, cabin_half[1], 0.04)
        slab_center = (cabin_x + cabin_length / 2, 0.0, cabin_z - cabin_height * 0.05)
        parts.append(_box("windscreen", slab_center, slab_half, glass_color, rotation_about("y", math.pi / 2 - tilt)))

    axle_inset = rng.uniform(0.55, 0.9)
    parts.extend(_wheels(length, width, wheel_radius, wheel_half_width, axle_inset))
    return ObjectInstance("cars", tuple(parts))


CAR_STYLES = ("sedan", "hatchback", "suv", "van", "pickup", "sports")
"""Body styles of :func:`sample_varied_car` (ShapeNet's car class mixes all of these)."""


def sample_varied_car(rng: np.random.Generator) -> ObjectInstance:
    """A car of one of :data:`CAR_STYLES`, drawn uniformly: the ``cars-varied`` class.

    The ``cars`` class (:func:`sample_car`) is one sedan-like family; its instances differ by about as much
    from each other as from their mean shape, so "the mean training shape" is a strong baseline there.
    ShapeNet's cars mix sedans, hatchbacks, SUVs, vans, pickups and sports cars, whose silhouettes differ
    far more; this class draws those styles (proportions as ranges per style, in metres before
    :func:`place`), so that the shape seen in an image carries information a reconstruction must use.
    """
    style = CAR_STYLES[int(rng.integers(len(CAR_STYLES)))]
    ranges = {  # length, width, clearance, body height, cabin height
        "sedan": ((4.2, 5.0), (1.7, 1.9), (0.14, 0.22), (0.5, 0.7), (0.4, 0.55)),
        "hatchback": ((3.5, 4.3), (1.6, 1.8), (0.14, 0.2), (0.5, 0.7), (0.45, 0.6)),
        "suv": ((4.3, 5.0), (1.8, 2.0), (0.25, 0.35), (0.7, 0.9), (0.55, 0.75)),
        "van": ((4.6, 5.4), (1.8, 2.0), (0.15, 0.25), (0.8, 1.0), (0.8, 1.1)),
        "pickup": ((5.0, 5.6), (1.8, 2.0), (0.3, 0.4), (0.7, 0.9), (0.5, 0.7)),
        "sports": ((4.2, 4.7), (1.8, 2.0), (0.08, 0.12), (0.35, 0.45), (0.28, 0.36)),
    }[style]
    length, width, clearance, body_height, cabin_height = (rng.uniform(*r) for r in ranges)
    wheel_radius = rng.uniform(0.3, 0.42) if style in ("suv", "pickup") else rng.uniform(0.28, 0.36)
    wheel_half_width = rng.uniform(0.09, 0.15)
    body_color = _random_color(rng, (0.4, 0.95), (0.5, 0.92))
    glass_color = _random_color(rng, (0.1, 0.35), (0.2, 0.4))
    top = clearance + body_height
    parts = [
        _box("body", (0.0, 0.0, clearance + body_height / 2), (length / 2, width / 2, body_height / 2), body_color)
    ]
    # Cabin extent along the car (front = +x): [rear, front] as fractions of the length from the rear end.
    cabin_span = {
        "sedan": (rng.uniform(0.22, 0.3), rng.uniform(0.68, 0.75)),
        "hatchback": (rng.uniform(0.02, 0.06), rng.uniform(0.62, 0.7)),
        "suv": (rng.uniform(0.02, 0.06), rng.uniform(0.62, 0.7)),
        "van": (rng.uniform(0.01, 0.03), rng.uniform(0.8, 0.9)),
        "pickup": (rng.uniform(0.45, 0.5), rng.uniform(0.72, 0.78)),
        "sports": (rng.uniform(0.3, 0.38), rng.uniform(0.62, 0.68)),
    }[style]
    rear, front = (fraction * length - length / 2 for fraction in cabin_span)
    cabin_half = ((front - rear) / 2, width * rng.uniform(0.4, 0.47), cabin_height / 2)
    cabin_x, cabin_z = (front + rear) / 2, top + cabin_height / 2
    parts.append(_box("cabin", (cabin_x, 0.0, cabin_z), cabin_half, glass_color))
    roof_half = (cabin_half[0] * rng.uniform(0.85, 1.0), cabin_half[1] * 1.04, rng.uniform(0.025, 0.05))
    parts.append(_box("roof", (cabin_x, 0.0, cabin_z + cabin_half[2]), roof_half, body_color))
    if style == "pickup":  # an open bed behind the cabin: two side walls and a tailgate
        wall_height = rng.uniform(0.3, 0.45)
        bed_rear, bed_front = -length / 2, rear - 0.05
        wall_z = top + wall_height / 2
        for sy in (-1.0, 1.0):
            center = ((bed_rear + bed_front) / 2, sy * (width / 2 - 0.04), wall_z)
            parts.append(_box("bed", center, ((bed_front - bed_rear) / 2, 0.04, wall_height / 2), body_color))
        parts.append(_box("bed", (bed_rear + 0.04, 0.0, wall_z), (0.04, width / 2, wall_height / 2), body_color))
    if style == "sports" or rng.uniform() < 0.3:  # a rear spoiler
        spoiler_z = top + rng.uniform(0.12, 0.2)
        parts.append(_box("spoiler", (-length / 2 + 0.12, 0.0, spoiler_z), (0.1, width * 0.42, 0.02), body_color))
    inset = rng.uniform(0.6, 0.9) if style != "van" else rng.uniform(0.5, 0.7)
    parts.extend(_wheels(length, width, wheel_radius, wheel_half_width, inset))
    return ObjectInstance("cars-varied", tuple(parts))


def sample_chair(rng: np.random.Generator) -> ObjectInstance:
    """A chair: a seat, a backrest (solid, slatted or tilted), legs (square, round or one pedestal), maybe arms."""
    seat_width = rng.uniform(0.4, 0.6)
    seat_depth = rng.uniform(0.4, 0.6)
    seat_thickness = rng.uniform(0.03, 0.09)
    seat_height = rng.uniform(0.38, 0.55)
    frame_color = _random_color(rng, (0.2, 0.7), (0.3, 0.75))
    cushion_color = _random_color(rng, (0.3, 0.9), (0.5, 0.92)) if rng.uniform() < 0.6 else frame_color

    seat_z = seat_height - seat_thickness / 2
    parts = [_box("seat", (0.0, 0.0, seat_z), (seat_depth / 2, seat_width / 2, seat_thickness / 2), cushion_color)]

    leg_style = rng.choice(["square", "round", "pedestal"])
    leg_size = rng.uniform(0.018, 0.035)
    leg_half_height = (seat_height - seat_thickness) / 2
    inset = rng.uniform(0.02, 0.06)
    upright = np.eye(3)
    if leg_style == "pedestal":
        column_radius = rng.uniform(0.025, 0.05)
        column_center = (0.0, 0.0, leg_half_height)
        parts.append(_cylinder("leg", column_center, column_radius, leg_half_height, frame_color, upright))
        base_radius = min(seat_width, seat_depth) * rng.uniform(0.35, 0.5)
        parts.append(_cylinder("base", (0.0, 0.0, 0.015), base_radius, 0.015, frame_color, upright))
    else:
        for sx in (-1.0, 1.0):
            for sy in (-1.0, 1.0):
                center = (sx * (seat_depth / 2 - inset), sy * (seat_width / 2 - inset), leg_half_height)
                if leg_style == "square":
                    parts.append(_box("leg", center, (leg_size, leg_size, leg_half_height), frame_color))
                else:
                    parts.append(_cylinder("leg", center, leg_size, leg_half_height, frame_color, upright))

    back_height = rng.uniform(0.3, 0.6)
    back_thickness = rng.uniform(0.025, 0.07)
    recline = rng.uniform(0.0, 0.3)
    tilt = rotation_about("y", recline)  # leans the back away from the seat (local z -> towards +x)
    lean = np.array([math.sin(recline), 0.0, math.cos(recline)])
    back_base = np.array([seat_depth / 2 - back_thickness / 2, 0.0, seat_height])
    back_style = rng.choice(["solid", "slats"])
    if back_style == "solid":
        center = back_base + lean * back_height / 2
        half = (back_thickness / 2, seat_width / 2 * rng.uniform(0.85, 1.0), back_height / 2)
        parts.append(_box("back", tuple(center), half, cushion_color, tilt))
    else:
        rail_half_height = rng.uniform(0.03, 0.07)
        rail_center = back_base + lean * (back_height - rail_half_height)
        rail_half = (back_thickness / 2, seat_width / 2, rail_half_height)
        parts.append(_box("back", tuple(rail_center), rail_half, frame_color, tilt))
        slat_count = int(rng.integers(2, 5))
        slat_half_width = rng.uniform(0.012, 0.03)
        for y in np.linspace(-seat_width / 2 + slat_half_width, seat_width / 2 - slat_half_width, slat_count):
            center = back_base + lean * (back_height - 2 * rail_half_height) / 2 + np.array([0.0, y, 0.0])
            half = (back_thickness / 2 * 0.8, slat_half_width, (back_height - 2 * rail_half_height) / 2)
            parts.append(_box("back", tuple(center), half, frame_color, tilt))

    if rng.uniform() < 0.35:
        arm_height = rng.uniform(0.15, 0.25)
        for sy in (-1.0, 1.0):
            y = sy * (seat_width / 2 - 0.02)
            parts.append(_box("arm", (0.0, y, seat_height + arm_height), (seat_depth / 2, 0.025, 0.02), frame_color))
            post = (-seat_depth / 2 + 0.04, y, seat_height + arm_height / 2)
            parts.append(_box("arm", post, (0.02, 0.02, arm_height / 2), frame_color))
    return ObjectInstance("chairs", tuple(parts))


CLASS_SAMPLERS: Dict[str, Callable[[np.random.Generator], ObjectInstance]] = {
    "cars": sample_car,
    "cars-varied": sample_varied_car,
    "chairs": sample_chair,
}
"""Class name (as in the SRN split folders) -> instance sampler."""

Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""Rotation from the canonical z-up frame to ShapeNet's y-up frame (old z becomes y)."""


def place(instance: ObjectInstance, frame: Literal["srn", "dvr"]) -> ObjectInstance:
    """Move an instance into a format's world frame with a similarity transform (docs/conventions.md).

    ``srn``: z-up, bounding box centred at the origin and scaled to a unit diagonal (ShapeNet's
    normalisation; it fits in a sphere of radius 0.5). ``dvr``: the same centring, scaled so the longest
    side is 1 (the unit cube [-0.5, 0.5]^3, as Occupancy Networks), then rotated y-up.
    """
    low, high = instance.bounds()
    center = (low + high) / 2
    scale = 1.0 / float(np.linalg.norm(high - low)) if frame == "srn" else 1.0 / float(np.max(high - low))
    rotation = np.eye(3) if frame == "srn" else Z_UP_TO_Y_UP
    parts = []
    for part in instance.parts:
        moved_center = rotation @ ((np.asarray(part.center) - center) * scale)
        part_rotation = np.asarray(part.rotation, dtype=np.float64).reshape(3, 3)
        parts.append(
            replace(
                part,
                center=_flat(moved_center),
                size=tuple(float(v) * scale for v in part.size),
                rotation=_flat(rotation @ part_rotation),
            )
        )
    to_world = rotation @ np.asarray(instance.to_world, dtype=np.float64).reshape(3, 3)
    return ObjectInstance(instance.class_name, tuple(parts), _flat(to_world))


def instance_names(class_name: str, count: int, seed: int) -> List[str]:
    """ShapeNet-like 32-hex model ids, reproducible from the seed and distinct within a class."""
    rng = np.random.default_rng([seed, sum(map(ord, class_name))])
    names: List[str] = []
    while len(names) < count:
        name = "".join(f"{value:02x}" for value in rng.integers(0, 256, size=16))
        if name not in names:
            names.append(name)
    return names
