"""Exact rendering of an :class:`~bts_studio.data.synthetic.shapenet_objects.ObjectInstance`: colour, mask and z-depth.

Like SRN's ShapeNet renderer: one ray per pixel through its centre (no anti-aliasing), white background,
diffuse shading under lights fixed in the object's canonical frame, so colours do not depend on the
viewpoint. Pixel ``(row i, column j)`` is the ray through ``(j + 0.5, i + 0.5)`` for pixel intrinsics
``fx, fy, cx, cy`` (docs/conventions.md, "Pixels"), exactly the ray nerfstudio casts for the same camera.
"""

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from torch import Tensor

from bts_studio.data.synthetic.primitives import Scene
from bts_studio.data.synthetic.raycast import tile_order
from bts_studio.data.synthetic.shapenet_objects import ObjectInstance

LIGHTS: Tuple[Tuple[Tuple[float, float, float], float], ...] = (
    ((0.35, 0.45, 1.0), 0.55),  # key light from above
    ((-0.6, -0.5, -0.25), 0.25),  # fill from below/behind, so no face is flat ambient
)
"""(direction towards the light in the canonical z-up frame, intensity)."""

AMBIENT = 0.32
VIEW_BATCH_PIXELS = 1 << 18
"""Rays cast per call; bounds the temporary memory of the ray caster."""


@dataclass
class RenderedViews:
    """Rendered views of one object.

    Attributes:
        rgb: ``[V, H, W, 3]`` uint8, white (255) background.
        mask: ``[V, H, W]`` bool, True where a pixel's ray hits the object.
        z_depth: ``[V, H, W]`` float32 OpenCV z-depth of the hit, ``inf`` on background.
    """

    rgb: UInt8[np.ndarray, "V H W 3"]
    mask: Bool[np.ndarray, "V H W"]
    z_depth: Float[np.ndarray, "V H W"]


def camera_rays(
    c2w_opencv: Float[Tensor, "V 4 4"],
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    height: int,
    width: int,
) -> Tuple[Float[Tensor, "V HW 3"], Float[Tensor, "V HW 3"]]:
    """World rays through every pixel centre, in :func:`tile_order`; directions have camera z = 1 (t is z-depth)."""
    # float32 is exact enough for unit-sized objects and is what the ray caster computes in anyway.
    order = tile_order(height, width)
    rows = (order // width).float()
    cols = (order % width).float()
    u = (cols + 0.5 - cx) / fx
    v = (rows + 0.5 - cy) / fy
    camera_dirs = torch.stack([u, v, torch.ones_like(u)], dim=-1)
    directions = camera_dirs @ c2w_opencv[:, :3, :3].transpose(-1, -2).float()
    origins = c2w_opencv[:, None, :3, 3].float().expand_as(directions)
    return origins, directions


def rays_meet_box(
    origins: Float[Tensor, "N 3"], directions: Float[Tensor, "N 3"], low: Float[Tensor, "3"], high: Float[Tensor, "3"]
) -> Bool[Tensor, "N"]:  # noqa: F821
    """Whether each ray ``o + t d`` (t > 0) passes through the axis-aligned box ``[low, high]``."""
    inverse = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t1, t2 = (low - origins) * inverse, (high - origins) * inverse
    near = torch.minimum(t1, t2).amax(dim=-1)
    far = torch.maximum(t1, t2).amin(dim=-1)
    return (far >= near) & (far > 0)


def shade(
    instance: ObjectInstance, normals: Float[Tensor, "N 3"], albedo: Float[Tensor, "N 3"]
) -> Float[Tensor, "N 3"]:
    """Diffuse shading ``albedo * min(1, ambient + sum_k I_k max(0, n . l_k))``, lights in the instance frame."""
    to_world = torch.tensor(instance.to_world, dtype=normals.dtype).reshape(3, 3)
    intensity = torch.full_like(normals[:, 0], AMBIENT)
    for direction, power in LIGHTS:
        light = to_world @ torch.tensor(direction, dtype=normals.dtype)
        light = light / light.norm()
        intensity = intensity + power * (normals @ light).clamp_min(0.0)
    return albedo * intensity.clamp_max(1.0)[:, None]


def render_views(
    instance: ObjectInstance,
    c2w_opencv: Float[Tensor, "V 4 4"],
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    height: int,
    width: int,
    scene: Scene | None = None,
) -> RenderedViews:
    """Render ``V`` views of ``instance`` with pinhole intrinsics in nerfstudio pixel units."""
    assert c2w_opencv.ndim == 3 and c2w_opencv.shape[1:] == (4, 4), f"expected [V, 4, 4], got {c2w_opencv.shape}"
    scene = scene or instance.scene()
    colors = torch.tensor([part.color for part in instance.parts], dtype=torch.float32)
    num_views, pixels = c2w_opencv.shape[0], height * width
    order = tile_order(height, width)
    rgb = np.empty((num_views, pixels, 3), dtype=np.uint8)
    mask = np.empty((num_views, pixels), dtype=bool)
    depth = np.empty((num_views, pixels), dtype=np.float32)
    views_per_batch = max(1, VIEW_BATCH_PIXELS // pixels)
    low, high = (torch.from_numpy(bound).float() for bound in instance.bounds())
    padding = 1e-3 * float((high - low).norm())
    low, high = low - padding, high + padding
    for start in range(0, num_views, views_per_batch):
        poses = c2w_opencv[start : start + views_per_batch]
        origins, directions = camera_rays(poses, fx, fy, cx, cy, height, width)
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        # Most pixels are background: only rays that enter the object's bounding box are cast.
        candidates = rays_meet_box(origins, directions, low, high).nonzero()[:, 0]
        hits = scene.raycast(origins[candidates], directions[candidates])
        hit = torch.zeros(origins.shape[0], dtype=torch.bool)
        hit[candidates] = hits.primitive_id >= 0
        t = torch.full((origins.shape[0],), float("inf"))
        t[candidates] = hits.t.float()
        color = torch.ones(origins.shape[0], 3)
        found = hits.primitive_id >= 0
        color[candidates[found]] = shade(instance, hits.normal[found], colors[hits.primitive_id[found]])
        batch = slice(start, start + poses.shape[0])
        view_shape = (poses.shape[0], pixels)
        # Tile order back to row-major pixels.
        rgb[batch][:, order.numpy()] = (color * 255.0).round().to(torch.uint8).reshape(*view_shape, 3).numpy()
        mask[batch][:, order.numpy()] = hit.reshape(view_shape).numpy()
        depth[batch][:, order.numpy()] = t.reshape(view_shape).numpy()
    return RenderedViews(
        rgb=rgb.reshape(num_views, height, width, 3),
        mask=mask.reshape(num_views, height, width),
        z_depth=depth.reshape(num_views, height, width),
    )
