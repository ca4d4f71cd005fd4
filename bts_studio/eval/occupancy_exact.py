"""Exact occupancy metrics on synthetic data: the generator's analytic scene instead of accumulated lidar.

Same metrics and thresholds as the lidar protocol (``bts_studio.eval.occupancy_protocol``), but:

* the query points fill the full cuboid of the BTS paper's table, in the tilted (road-parallel) frame:
  x (width) -4..4 m, y 0..1 m below the camera (height -1..0 m), z (depth) 3..20 m. Sampling: 10 points per metre
  along x and z (80 x 170, inclusive linspace as BTS's ``get_pts``) and 4 levels in y (0, 1/3, 2/3, 1 m), i.e.
  54,400 points per image; ``ExactGrid`` changes it;
* reference occupancy is the scene's exact inside test at each point;
* a point is visible when it projects into the image and the ray from the camera centre reaches it before any
  surface (exact raycast). This visibility does not depend on the evaluated model, unlike the lidar protocol's.
"""

from dataclasses import dataclass
from typing import Dict, Protocol, Tuple, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from bts_studio.eval.density_field import FrameField
from bts_studio.eval.occupancy import CAMERA_TILT_DEG, axis_samples, box_grid, outside_frustum, tilted_to_camera
from bts_studio.eval.occupancy_protocol import OccupancyFrame, score_frame


@runtime_checkable
class AnalyticScene(Protocol):
    """What the exact variant needs from a ground-truth scene (world frame, metres)."""

    def occupied(self, points_world: Float[Tensor, "N 3"]) -> Bool[Tensor, " N"]:
        """Whether each point lies inside a solid."""
        ...

    def raycast(self, origins: Float[Tensor, "N 3"], directions: Float[Tensor, "N 3"]) -> "RayHitDistances":
        """First hit along each ray; ``.t`` is in multiples of the direction (``inf`` when nothing is hit)."""
        ...


@runtime_checkable
class RayHitDistances(Protocol):
    """The part of a raycast result the exact variant reads (``bts_studio.data.synthetic.raycast.RayHits``)."""

    t: Float[Tensor, " N"]


@dataclass(frozen=True)
class ExactGrid:
    """The exact variant's query cuboid, in the tilted frame (y down, metres)."""

    x_range: Tuple[float, float] = (-4.0, 4.0)
    y_range: Tuple[float, float] = (0.0, 1.0)
    z_range: Tuple[float, float] = (3.0, 20.0)
    points_per_metre_xz: float = 10.0
    points_per_metre_y: float = 4.0

    def points(self) -> Float[Tensor, "Y Z X 3"]:
        xs = axis_samples(*self.x_range, self.points_per_metre_xz)
        ys = axis_samples(*self.y_range, self.points_per_metre_y)
        zs = axis_samples(*self.z_range, self.points_per_metre_xz)
        return box_grid(xs, ys, zs)


def camera_to_world_points(points_camera: Float[Tensor, "N 3"], c2w: Float[Tensor, "4 4"]) -> Float[Tensor, "N 3"]:
    """Apply an OpenCV camera-to-world pose to camera-frame points."""
    return points_camera @ c2w[:3, :3].T + c2w[:3, 3]


def exact_visibility(
    scene: AnalyticScene, points_world: Float[Tensor, "N 3"], camera_center: Float[Tensor, " 3"]
) -> Bool[Tensor, " N"]:
    """Line of sight: the ray from the camera centre hits no surface before the point."""
    offsets = points_world - camera_center
    distances = offsets.norm(dim=-1)
    directions = offsets / distances.clamp_min(1e-9)[:, None]
    hits = scene.raycast(camera_center.expand_as(points_world).contiguous(), directions.float())
    return distances <= hits.t.to(distances)


def exact_reference(
    scene: AnalyticScene,
    query_tilted: Float[Tensor, "N 3"],
    c2w: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"],
    width: int,
    height: int,
    tilt_deg: float = CAMERA_TILT_DEG,
) -> Tuple[Bool[Tensor, " N"], Bool[Tensor, " N"]]:
    """Exact reference occupancy and visibility of tilted-frame query points for one camera.

    Args:
        scene: the analytic scene.
        query_tilted: query points in the tilted frame of the camera.
        c2w: the camera's OpenCV camera-to-world pose ``[4, 4]`` in the scene's world frame.
        K: its intrinsics (nerfstudio pixel units) at ``width x height``.
        width: image width.
        height: image height.
        tilt_deg: the tilted frame's angle.

    Returns:
        ``occupied`` (inside a solid) and ``visible`` (inside the image and in the line of sight).
    """
    query_camera = tilted_to_camera(query_tilted, tilt_deg)
    # float64 world coordinates: KITTI-360 poses lie kilometres from the world origin.
    c2w = c2w.to(query_camera.device, torch.float64)
    points_world = camera_to_world_points(query_camera.double(), c2w)
    occupied = scene.occupied(points_world).to(query_camera.device, torch.bool)
    in_image = ~outside_frustum(query_camera, K.to(query_camera), width, height)
    visible = in_image & exact_visibility(scene, points_world, c2w[:3, 3]).to(query_camera.device)
    return occupied, visible


def evaluate_exact_frames(
    fields: Dict[str, FrameField],
    scene: AnalyticScene,
    c2w: Float[Tensor, "4 4"],
    grid: ExactGrid | None = None,
    tilt_deg: float = CAMERA_TILT_DEG,
) -> Dict[str, OccupancyFrame]:
    """Score one image of several models against the analytic scene (the reference is built once)."""
    assert fields, "need at least one field"
    first = next(iter(fields.values()))
    query_tilted = (grid or ExactGrid()).points().reshape(-1, 3).to(first.depth.device)
    occupied, visible = exact_reference(scene, query_tilted, c2w, first.K, first.width, first.height, tilt_deg)
    occupied, visible = occupied.to(query_tilted.device), visible.to(query_tilted.device)
    for name, field_ in fields.items():
        if (field_.width, field_.height) != (first.width, first.height) or not torch.equal(field_.K, first.K):
            raise ValueError(f"field {name!r} has another camera than {next(iter(fields))!r}; score them separately")
    return {name: score_frame(f, query_tilted, occupied, visible, tilt_deg) for name, f in fields.items()}


def evaluate_exact_frame(
    field_: FrameField,
    scene: AnalyticScene,
    c2w: Float[Tensor, "4 4"],
    grid: ExactGrid | None = None,
    tilt_deg: float = CAMERA_TILT_DEG,
) -> OccupancyFrame:
    """Score one image of one model against the analytic scene (see the module docstring)."""
    return evaluate_exact_frames({"model": field_}, scene, c2w, grid, tilt_deg)["model"]
