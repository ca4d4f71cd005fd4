"""Materials, procedural texture and lighting of the synthetic street (colours for cameras, intensity for lidar).

Texture is value noise sampled from a large seeded random table at several rotated, incommensurate
frequencies, with per-primitive offsets, so no surface repeats and neighbouring frames share detail for
photometric matching. Each octave fades out once its cells get smaller than about two pixels (a cheap
mip-map), which keeps distant surfaces free of flickering aliasing between frames. Lighting is Lambertian
(sun + sky ambient), view-independent, so a surface point has the same colour in every camera.
"""

import math
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from bts_studio.data.synthetic.primitives import Scene
from bts_studio.data.synthetic.raycast import RayHits, to_local
from bts_studio.data.synthetic.street import StreetLayout

MATERIALS = ("ground", "facade", "car_body", "car_cabin", "rubber", "bark", "foliage", "metal")
TABLE_SIZE = 1024
_OCTAVE_ANGLES = (0.0, 0.61, 1.29, 2.03)
_OCTAVE_SCALES = (1.0, 3.7, 13.1, 47.3)  # incommensurate: the summed pattern never repeats in a scene


class NoiseTexture:
    """Seeded 2D value noise (bilinear over a random ``TABLE_SIZE``^2 lattice, wrapped)."""

    def __init__(self, seed: int, device: torch.device):
        generator = torch.Generator().manual_seed(seed)
        table = torch.rand(TABLE_SIZE, TABLE_SIZE, generator=generator)
        table = torch.cat([table, table[:1]], dim=0)
        table = torch.cat([table, table[:, :1]], dim=1)  # wrap padding: cell S equals cell 0
        self.table = table[None, None].to(device)

    def sample(self, uv_cells: Tensor) -> Tensor:
        """Noise in [0, 1] at ``[N, 2]`` lattice coordinates."""
        wrapped = torch.remainder(uv_cells, TABLE_SIZE) / TABLE_SIZE * 2.0 - 1.0
        grid = wrapped.to(self.table.dtype).view(1, 1, -1, 2)
        return F.grid_sample(self.table, grid, mode="bilinear", padding_mode="border", align_corners=True).view(-1)

    def fbm(self, uv_metres: Tensor, footprint: Tensor, cell: float, octaves: int = 3) -> Tensor:
        """Sum of ``octaves`` noise layers with cell sizes ``cell * _OCTAVE_SCALES``, each faded to its mean
        where its cells are smaller than ~2 pixel footprints; result in about [0, 1], mean 0.5."""
        total = torch.zeros_like(uv_metres[:, 0])
        weight_sum = 0.0
        for octave in range(octaves):
            size = cell * _OCTAVE_SCALES[octave]
            angle = _OCTAVE_ANGLES[octave]
            c, s = math.cos(angle), math.sin(angle)
            x, y = uv_metres[:, 0], uv_metres[:, 1]
            rotated = torch.stack([c * x - s * y, s * x + c * y], dim=-1)
            fade = (size / footprint.clamp_min(1e-6) / 2.0 - 0.5).clamp(0.0, 1.0)
            amplitude = 1.0 / (1.0 + 0.6 * octave)
            total = total + amplitude * (0.5 + fade * (self.sample(rotated / size + 17.0 * octave) - 0.5))
            weight_sum += amplitude
        return total / weight_sum


def _band(value: Tensor, period: float, low: float, high: float, footprint: Tensor) -> Tensor:
    """1 inside ``[low, high)`` of each period (fractions), softened by the footprint and faded to the duty
    cycle when the period shrinks below a few pixels."""
    phase = torch.remainder(value / period, 1.0)
    soft = (footprint / period).clamp(1e-4, 0.5)
    inside = torch.sigmoid((phase - low) / soft * 4.0) * torch.sigmoid((high - phase) / soft * 4.0)
    fade = (period / footprint.clamp_min(1e-6) / 4.0 - 0.5).clamp(0.0, 1.0)
    return fade * inside + (1.0 - fade) * (high - low)


@dataclass
class MaterialTable:
    """Per-primitive shading parameters as tensors (index = primitive id)."""

    material: Tensor  # [P] index into MATERIALS
    color: Tensor  # [P, 3]
    offset: Tensor  # [P, 2] texture offsets
    window_spacing: Tensor  # [P]
    floor_height: Tensor  # [P]
    window_color: Tensor  # [P, 3]

    @classmethod
    def from_scene(cls, scene: Scene, device: torch.device) -> "MaterialTable":
        rows = []
        for primitive in scene.primitives:
            attributes = primitive.attributes
            rows.append(
                (
                    MATERIALS.index(attributes.get("material", "metal")),
                    primitive.color,
                    attributes.get("texture_offset", (0.0, 0.0)),
                    attributes.get("window_spacing", 3.0),
                    attributes.get("floor_height", 3.0),
                    attributes.get("window_color", (0.2, 0.25, 0.3)),
                )
            )
        return cls(
            material=torch.tensor([r[0] for r in rows], dtype=torch.int64, device=device),
            color=torch.tensor([r[1] for r in rows], dtype=torch.float32, device=device),
            offset=torch.tensor([r[2] for r in rows], dtype=torch.float32, device=device),
            window_spacing=torch.tensor([r[3] for r in rows], dtype=torch.float32, device=device),
            floor_height=torch.tensor([r[4] for r in rows], dtype=torch.float32, device=device),
            window_color=torch.tensor([r[5] for r in rows], dtype=torch.float32, device=device),
        )


class StreetShader:
    """Albedo, lighting and sky of one street world."""

    def __init__(
        self,
        scene: Scene,
        layout: StreetLayout,
        sun: Tuple[float, float, float],
        seed: int,
        device: torch.device,
        texture_scale: float = 1.0,
        texture_contrast: float = 1.0,
    ):
        self.texture_scale = texture_scale
        """Multiplier of the procedural texture's noise cell sizes (1: the default world)."""
        self.texture_contrast = texture_contrast
        """Multiplier of the texture's deviation from mid-grey (1: the default world)."""
        self.scene = scene
        self.layout = layout
        self.device = device
        # Shading works in float32 relative to the scene origin (KITTI-360 worlds sit kilometres away).
        self.origin = torch.tensor(scene.origin, dtype=torch.float64, device=device)
        self.origin_xy = (float(scene.origin[0]), float(scene.origin[1]))
        self.ground_height = float(layout.ground_z - scene.origin[2])
        self.packed = scene.packed(device)
        self.noise = NoiseTexture(seed, device)
        self.materials = MaterialTable.from_scene(scene, device)
        self.sizes = scene.packed(device).sizes
        self.sun = torch.tensor(sun, dtype=torch.float32, device=device)

    def _grain(self, uv: Tensor, footprint: Tensor, cell: float) -> Tensor:
        """The noise every material's texture is made of, in [0, 1] (more with ``texture_contrast`` > 1, clamped
        with the albedo); the defaults give the default world's values exactly."""
        grain = self.noise.fbm(uv, footprint, cell=cell * self.texture_scale)
        if self.texture_contrast != 1.0:
            grain = 0.5 + (grain - 0.5) * self.texture_contrast
        return grain

    def _ground(self, points: Tensor, footprint: Tensor, offset: Tensor) -> Tensor:
        s, lateral = self.layout.coordinates(points[:, :2], self.origin_xy)
        s, lateral = s.float(), lateral.float()
        distance = lateral.abs()
        layout = self.layout
        side_street = layout.side_street_mask(s, lateral)
        road = (distance < layout.road_half_width) | side_street
        sidewalk = ~road & (distance < layout.road_half_width + layout.sidewalk_width)
        uv = torch.stack([s, lateral], dim=-1)
        grain = self._grain(uv + offset, footprint, 0.035)
        asphalt = (0.17 + 0.22 * grain)[:, None].expand(-1, 3) * torch.tensor([1.0, 1.0, 1.04], device=self.device)
        centre_line = _band(s, 6.0, 0.0, 0.5, footprint) * (distance < 0.075).float()  # dashed, 3 m on 3 m off
        edge_line = ((distance > 3.0) & (distance < 3.12) & ~side_street).float()
        marking = torch.maximum(centre_line, edge_line)[:, None]
        asphalt = asphalt * (1 - marking) + 0.8 * marking
        joints = torch.maximum(_band(s, 0.6, 0.0, 0.06, footprint), _band(lateral, 0.6, 0.0, 0.06, footprint))
        curb = (distance - layout.road_half_width < 0.25).float()
        paving = (0.5 + 0.2 * grain - 0.15 * joints + 0.12 * curb)[:, None] * torch.tensor(
            [1.0, 0.96, 0.9], device=self.device
        )
        lot_grain = self._grain(uv * 1.7 + offset + 311.0, footprint, 0.05)
        lot = (0.18 + 0.3 * lot_grain)[:, None] * torch.tensor([0.85, 1.0, 0.6], device=self.device)
        albedo = torch.where(road[:, None], asphalt, torch.where(sidewalk[:, None], paving, lot))
        return albedo

    def relative(self, points_world: Tensor) -> Tensor:
        """World points (float64) -> float32 relative to the scene origin, the frame shading works in."""
        return (points_world.double() - self.origin).float()

    def albedo(self, scene_hits: RayHits, points: Tensor, footprint: Tensor) -> Tensor:
        """Albedo ``[M, 3]`` at hit points (relative to the scene origin, see :meth:`relative`)."""
        ids = scene_hits.primitive_id
        table = self.materials
        material = table.material.index_select(0, ids)
        color = table.color.index_select(0, ids)
        offset = table.offset.index_select(0, ids)
        local = to_local(self.packed, points, ids)
        size = self.sizes.index_select(0, ids)
        albedo = color.clone()
        # Texture coordinates on each primitive: the two local axes across its dominant normal direction.
        axis = (local.abs() / size.clamp_min(1e-6)).argmax(dim=-1)
        u = torch.where(axis == 0, local[:, 1], local[:, 0])
        v = torch.where(axis == 2, local[:, 1], local[:, 2])
        uv = torch.stack([u, v], dim=-1) + offset
        for index, name in enumerate(MATERIALS):
            select = (material == index).nonzero()[:, 0]
            if select.numel() == 0:
                continue
            fp = footprint.index_select(0, select)
            ids_selected = ids.index_select(0, select)
            if name == "ground":
                ground = self._ground(points.index_select(0, select), fp, offset.index_select(0, select))
                albedo.index_copy_(0, select, ground)
                continue
            grain = self._grain(uv.index_select(0, select), fp, 0.03 if name in ("facade", "bark") else 0.05)
            base = color.index_select(0, select)
            if name == "facade":
                height = local[select, 2] + size[select, 2]
                along = u.index_select(0, select)
                vertical = axis.index_select(0, select) < 2
                spacing = table.window_spacing.index_select(0, ids_selected)
                floor = table.floor_height.index_select(0, ids_selected)
                column = _band(along / spacing, 1.0, 0.28, 0.72, fp / spacing)
                row = _band(height / floor, 1.0, 0.3, 0.78, fp / floor)
                window = column * row * (height > floor).float() * (height < 2 * size[select, 2] - 0.7).float()
                window = window * vertical.float()
                wall = base * (0.6 + 0.8 * grain)[:, None]
                plinth = (height < 0.6).float()[:, None]
                wall = wall * (1 - 0.35 * plinth)
                glass = table.window_color.index_select(0, ids_selected) * (0.7 + 0.8 * grain)[:, None]
                roof = (0.22 + 0.2 * grain)[:, None].expand(-1, 3)
                colour = wall * (1 - window[:, None]) + glass * window[:, None]
                albedo.index_copy_(0, select, torch.where(vertical[:, None], colour, roof))
            elif name == "car_cabin":
                side = (axis.index_select(0, select) < 2)[:, None]
                glass = torch.tensor([0.07, 0.09, 0.11], device=self.device) * (0.8 + 0.6 * grain)[:, None]
                albedo.index_copy_(0, select, torch.where(side, glass, base * (0.85 + 0.3 * grain)[:, None]))
            elif name == "car_body":
                albedo.index_copy_(0, select, base * (0.85 + 0.3 * grain)[:, None])
            elif name == "foliage":
                albedo.index_copy_(0, select, base * (0.35 + 1.1 * grain)[:, None])
            elif name == "bark":
                albedo.index_copy_(0, select, base * (0.5 + 0.9 * grain)[:, None])
            else:
                albedo.index_copy_(0, select, base * (0.8 + 0.4 * grain)[:, None])
        return albedo.clamp(0.0, 1.0)

    def light(self, albedo: Tensor, normals: Tensor, heights: Tensor) -> Tensor:
        """Sun + sky ambient, with mild darkening near the ground (a cheap ambient-occlusion stand-in)."""
        diffuse = (normals @ self.sun).clamp_min(0.0)
        ambient = 0.42 + 0.12 * normals[:, 2]
        occlusion = 1.0 - 0.25 * torch.exp(-heights.clamp_min(0.0) / 0.5) * (1.0 - normals[:, 2].abs())
        return albedo * ((ambient + 0.62 * diffuse) * occlusion)[:, None]

    def sky(self, directions: Tensor) -> Tensor:
        """Sky colour of unit world directions ``[M, 3]`` (at infinity: depends on direction only)."""
        up = directions[:, 2].clamp(-1.0, 1.0)
        blend = (up.clamp_min(0.0) / 0.6).clamp(max=1.0) ** 0.7
        horizon = torch.tensor([0.86, 0.9, 0.95], device=self.device)
        zenith = torch.tensor([0.38, 0.55, 0.85], device=self.device)
        colour = horizon * (1 - blend[:, None]) + zenith * blend[:, None]
        height = up.clamp_min(0.03)
        cloud_uv = directions[:, :2] / height[:, None] * 40.0
        clouds = self.noise.fbm(cloud_uv + 500.0, torch.full_like(up, 1e-3), cell=2.0, octaves=3)
        cover = ((clouds - 0.5) * 3.0).clamp(0.0, 1.0) * (up > 0.0).float()
        colour = colour * (1 - 0.6 * cover[:, None]) + 0.97 * 0.6 * cover[:, None]
        glow = (directions @ self.sun).clamp_min(0.0) ** 64
        return (colour + 0.25 * glow[:, None]).clamp(0.0, 1.0)

    def shade(self, origin: Tensor, directions: Tensor, hits: RayHits, pixel_angle: float) -> Tensor:
        """Linear RGB ``[N, 3]`` of camera rays from one ``origin`` (float64 world ``[3]``).

        Args:
            origin: camera centre (world, float64).
            directions: ``[N, 3]`` world ray directions as cast (any length).
            hits: the cast result.
            pixel_angle: angular size of a pixel near the image centre (radians), for texture filtering.
        """
        lengths = directions.norm(dim=-1)
        unit = directions / lengths[:, None]
        rgb = torch.empty(directions.shape[0], 3, device=directions.device)
        hit = (hits.primitive_id >= 0).nonzero()[:, 0]
        miss = (hits.primitive_id < 0).nonzero()[:, 0]
        if miss.numel():
            rgb.index_copy_(0, miss, self.sky(unit.index_select(0, miss)))
        if hit.numel():
            distance = hits.t.index_select(0, hit) * lengths.index_select(0, hit)
            normal = hits.normal.index_select(0, hit)
            cosine = (normal * unit.index_select(0, hit)).sum(dim=-1).abs().clamp_min(0.15)
            footprint = distance * pixel_angle / cosine
            points = self.relative(origin) + distance[:, None] * unit.index_select(0, hit)
            sub_hits = RayHits(hits.t.index_select(0, hit), hits.primitive_id.index_select(0, hit), normal)
            albedo = self.albedo(sub_hits, points, footprint)
            heights = points[:, 2] - self.ground_height
            rgb.index_copy_(0, hit, self.light(albedo, normal, heights))
        return rgb

    def reflectivity(self, hits: RayHits, points: Tensor, directions: Tensor) -> Tensor:
        """Lidar intensity in [0, 1] at hit points (relative, see :meth:`relative`): albedo luminance times an
        incidence falloff."""
        albedo = self.albedo(hits, points, torch.full_like(hits.t, 0.05))
        luminance = albedo @ torch.tensor([0.3, 0.59, 0.11], device=albedo.device)
        unit = directions / directions.norm(dim=-1, keepdim=True)
        cosine = (hits.normal * unit).sum(dim=-1).abs()
        return (luminance * (0.35 + 0.65 * cosine) * 1.4).clamp(0.0, 1.0)


def to_srgb8(linear: Tensor) -> Tensor:
    """Linear [0, 1] -> uint8 with a 2.2 gamma."""
    return (linear.clamp(0.0, 1.0) ** (1 / 2.2) * 255.0 + 0.5).to(torch.uint8)
