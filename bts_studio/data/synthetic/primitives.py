"""Analytic primitives and a :class:`Scene` that ray casts and answers "is this point inside?" exactly.

The shapes and their local frames are defined in :mod:`bts_studio.data.synthetic.raycast`. Nothing here is
specific to streets: a primitive carries a free-form ``label``, ``color`` and ``attributes`` that generators
use for materials, and a scene serialises to JSON so that ground truth can ship next to generated data.

World coordinates may be large (KITTI-360 poses are kilometres from their origin). A scene therefore keeps
an ``origin`` in float64 and does all float32 tensor work relative to it; callers always pass world
coordinates (float64 tensors keep full precision on the way in).
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from bts_studio.data.synthetic.raycast import (
    KIND_INDEX,
    KINDS,
    RAY_CHUNK,
    PackedPrimitives,
    RayHits,
    bounding_radii,
    cast_rays,
    inside_any,
    surface_normals,
    to_local,
)

SCENE_FORMAT = "bts-studio-scene"
SCENE_VERSION = 1

Vector3 = Tuple[float, float, float]
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def rotation_z(yaw: float) -> Tuple[float, ...]:
    """Row-major 3x3 rotation by ``yaw`` radians about +z (local x axis -> (cos, sin, 0))."""
    c, s = math.cos(yaw), math.sin(yaw)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Primitive:
    """One analytic shape.

    Attributes:
        kind: one of ``box``, ``cylinder``, ``ellipsoid``, ``halfspace``.
        center: world position of the local origin.
        size: box half extents; cylinder ``(radius_x, radius_y, half_height)``; ellipsoid radii;
            unused for a half-space.
        rotation: row-major 3x3 local -> world rotation (its columns are the local axes in world).
        label: semantic class, e.g. ``"building"``; free-form.
        color: base RGB in [0, 1] for renderers.
        attributes: free-form JSON-serialisable extras (materials, instance ids...).
    """

    kind: str
    center: Vector3
    size: Vector3 = (0.0, 0.0, 0.0)
    rotation: Tuple[float, ...] = IDENTITY
    label: str = ""
    color: Vector3 = (0.5, 0.5, 0.5)
    attributes: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"primitive kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.center) != 3 or len(self.size) != 3 or len(self.rotation) != 9:
            raise ValueError("center and size need 3 values, rotation 9 (row-major 3x3)")
        if self.kind != "halfspace" and min(self.size) <= 0:
            raise ValueError(f"{self.kind} sizes must be positive, got {self.size}")
        matrix = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        if not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-6) or np.linalg.det(matrix) < 0:
            raise ValueError(f"rotation must be a proper rotation matrix, got {self.rotation}")

    def to_json(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "center": list(self.center),
            "size": list(self.size),
            "rotation": list(self.rotation),
            "label": self.label,
            "color": list(self.color),
            "attributes": self.attributes,
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Primitive":
        return cls(
            kind=data["kind"],
            center=tuple(float(v) for v in data["center"]),
            size=tuple(float(v) for v in data["size"]),
            rotation=tuple(float(v) for v in data["rotation"]),
            label=str(data.get("label", "")),
            color=tuple(float(v) for v in data.get("color", (0.5, 0.5, 0.5))),
            attributes=dict(data.get("attributes", {})),
        )


def make_box(center: Sequence[float], half_extents: Sequence[float], yaw: float = 0.0, **kwargs: Any) -> Primitive:
    """An oriented box rotated by ``yaw`` about +z."""
    return Primitive("box", tuple(center), tuple(half_extents), rotation_z(yaw), **kwargs)


def make_vertical_cylinder(center: Sequence[float], radius: float, half_height: float, **kwargs: Any) -> Primitive:
    """An upright cylinder (axis +z) centred at ``center``."""
    return Primitive("cylinder", tuple(center), (radius, radius, half_height), IDENTITY, **kwargs)


def make_sphere(center: Sequence[float], radius: float, **kwargs: Any) -> Primitive:
    return Primitive("ellipsoid", tuple(center), (radius, radius, radius), IDENTITY, **kwargs)


def make_ellipsoid(center: Sequence[float], radii: Sequence[float], yaw: float = 0.0, **kwargs: Any) -> Primitive:
    return Primitive("ellipsoid", tuple(center), tuple(radii), rotation_z(yaw), **kwargs)


def make_ground(height: float, **kwargs: Any) -> Primitive:
    """The half-space ``z <= height`` (solid ground below a horizontal plane)."""
    return Primitive("halfspace", (0.0, 0.0, float(height)), (0.0, 0.0, 0.0), IDENTITY, **kwargs)


class Scene:
    """A set of primitives with exact ray casting and inside tests.

    Args:
        primitives: the shapes; a primitive's index in this list is its id.
        origin: float64 world point that tensor work is made relative to (precision only; results are in
            world coordinates). Defaults to the mean of the bounded primitives' centres.
        metadata: free-form JSON-serialisable information saved with the scene.
    """

    def __init__(
        self,
        primitives: Sequence[Primitive],
        origin: Optional[Sequence[float]] = None,
        metadata: Optional[Dict[str, Any]] = None,
    ):
        self.primitives: List[Primitive] = list(primitives)
        if origin is None:
            bounded = [p.center for p in self.primitives if p.kind != "halfspace"]
            origin = np.mean(bounded, axis=0) if bounded else np.zeros(3)
        self.origin = np.asarray(origin, dtype=np.float64).reshape(3)
        self.metadata: Dict[str, Any] = dict(metadata or {})
        self._packed: Dict[str, PackedPrimitives] = {}

    def __len__(self) -> int:
        return len(self.primitives)

    @property
    def labels(self) -> List[str]:
        return [p.label for p in self.primitives]

    def packed(self, device: Union[str, torch.device] = "cpu") -> PackedPrimitives:
        """Primitive parameters as float32 tensors on ``device`` (relative to :attr:`origin`), cached."""
        key = str(torch.device(device))
        if key not in self._packed:
            kinds = torch.tensor([KIND_INDEX[p.kind] for p in self.primitives], dtype=torch.int64)
            centers = np.array([p.center for p in self.primitives], dtype=np.float64).reshape(-1, 3) - self.origin
            rotations = np.array([p.rotation for p in self.primitives], dtype=np.float64).reshape(-1, 3, 3)
            sizes = torch.tensor(np.array([p.size for p in self.primitives]).reshape(-1, 3), dtype=torch.float32)
            self._packed[key] = PackedPrimitives(
                kinds=kinds.to(device),
                centers=torch.tensor(centers, dtype=torch.float32, device=device),
                rotations=torch.tensor(rotations, dtype=torch.float32, device=device),
                sizes=sizes.to(device),
                bound_radii=bounding_radii(kinds, sizes).to(device),
            )
        return self._packed[key]

    def _relative(self, points: Tensor) -> Tensor:
        origin = torch.as_tensor(self.origin, dtype=torch.float64, device=points.device)
        return (points.to(torch.float64) - origin).to(torch.float32)

    def raycast(
        self,
        origins: Float[Tensor, "*#batch 3"],
        directions: Float[Tensor, "*batch 3"],
        t_min: float = 1e-4,
        chunk: int = RAY_CHUNK,
    ) -> RayHits:
        """First intersection of each ray ``origins + t * directions`` (world coordinates) with the scene.

        For speed, pass rays in a coherent order (neighbouring rays close in direction, e.g. image pixels in
        :func:`~bts_studio.data.synthetic.raycast.tile_order`); any order gives the same, exact result.

        Args:
            origins: ray origins, world coordinates (float64 keeps precision far from the origin), or one
                origin ``[3]`` shared by all rays (faster).
            directions: ray directions; need not be unit: ``t`` is in multiples of them.
            t_min: hits at ``t <= t_min`` are ignored.
            chunk: rays per culling group (e.g. 64 for 8 x 8 pixel tiles); any value gives the same result.

        Returns:
            ``RayHits(t, primitive_id, normal)`` with the batch shape of the input: ``t`` (``inf`` on a miss),
            ``primitive_id`` int64 (``-1`` on a miss), ``normal`` unit outward world normal (zeros on a miss).
        """
        batch = directions.shape[:-1]
        assert directions.shape[-1] == 3 and origins.shape in (
            directions.shape,
            (3,),
        ), f"origins must be [3] or match directions [..., 3], got {tuple(origins.shape)}, {tuple(directions.shape)}"
        if origins.shape != (3,) and origins.dim() > 1 and all(stride == 0 for stride in origins.stride()[:-1]):
            origins = origins.reshape(-1, 3)[0]  # an expanded single origin: use the shared-origin fast path
        local_origins = self._relative(origins if origins.dim() == 1 else origins.reshape(-1, 3))
        hits = cast_rays(self.packed(directions.device), local_origins, directions.reshape(-1, 3).float(), t_min, chunk)
        return RayHits(
            t=hits.t.reshape(batch),
            primitive_id=hits.primitive_id.reshape(batch),
            normal=hits.normal.reshape(*batch, 3),
        )

    def occupied(self, points: Float[Tensor, "*batch 3"]) -> Bool[Tensor, "*batch"]:
        """Exactly whether each world point lies inside (or on the surface of) any primitive."""
        assert points.shape[-1] == 3, f"points must be [..., 3], got {tuple(points.shape)}"
        inside = inside_any(self.packed(points.device), self._relative(points.reshape(-1, 3)))
        return inside.reshape(points.shape[:-1])

    def local_points(self, points: Float[Tensor, "N 3"], primitive_id: Int[Tensor, " N"]) -> Float[Tensor, "N 3"]:
        """World points expressed in the local frame of the given primitives (for texturing)."""
        return to_local(self.packed(points.device), self._relative(points), primitive_id)

    def normals(self, points: Float[Tensor, "N 3"], primitive_id: Int[Tensor, " N"]) -> Float[Tensor, "N 3"]:
        """Outward unit normals (world axes) at world surface points of the given primitives."""
        return surface_normals(self.packed(points.device), self._relative(points), primitive_id)

    def to_json(self) -> Dict[str, Any]:
        return {
            "format": SCENE_FORMAT,
            "version": SCENE_VERSION,
            "origin": self.origin.tolist(),
            "metadata": self.metadata,
            "primitives": [p.to_json() for p in self.primitives],
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Scene":
        if data.get("format") != SCENE_FORMAT:
            raise ValueError(f"not a {SCENE_FORMAT} JSON document (format={data.get('format')!r})")
        if data.get("version") != SCENE_VERSION:
            raise ValueError(f"unsupported scene version {data.get('version')!r}, expected {SCENE_VERSION}")
        primitives = [Primitive.from_json(item) for item in data["primitives"]]
        return cls(primitives, origin=data["origin"], metadata=data.get("metadata", {}))

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Scene":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: scene file not found")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a valid scene file ({error})") from error
