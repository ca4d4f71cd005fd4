"""Area-uniform samples of an object's outer surface, as Occupancy Networks samples its watertight meshes.

Each part's surface is sampled exactly (box faces, cylinder side and caps) in proportion to its area;
samples buried inside another part are dropped, which leaves the boundary of the union of the parts.
"""

import math
from typing import Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from bts_studio.data.synthetic.primitives import Primitive
from bts_studio.data.synthetic.shapenet_objects import ObjectInstance

OUTSIDE_STEP = 1e-5
"""A sample moved this far along its normal must be outside every other part to count as surface."""


def part_area(part: Primitive) -> float:
    """Surface area of a box or cylinder part."""
    sx, sy, sz = part.size
    if part.kind == "box":
        return 8.0 * (sx * sy + sy * sz + sx * sz)
    if part.kind == "cylinder":
        return 2.0 * math.pi * sx * (2.0 * sz) + 2.0 * math.pi * sx * sx
    raise ValueError(f"surface sampling supports boxes and cylinders, not {part.kind}")


def _local_box_samples(size: Tensor, count: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    sx, sy, sz = size.tolist()
    face_areas = torch.tensor([sy * sz, sy * sz, sx * sz, sx * sz, sx * sy, sx * sy], dtype=torch.float64)
    face = torch.multinomial(face_areas, count, replacement=True, generator=generator)
    axis, sign = face // 2, torch.where(face % 2 == 0, 1.0, -1.0).to(torch.float64)
    points = (2.0 * torch.rand(count, 3, generator=generator, dtype=torch.float64) - 1.0) * size
    points[torch.arange(count), axis] = sign * size[axis]
    normals = torch.zeros(count, 3, dtype=torch.float64)
    normals[torch.arange(count), axis] = sign
    return points, normals


def _local_cylinder_samples(size: Tensor, count: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    radius, half_height = float(size[0]), float(size[2])
    areas = torch.tensor([2 * math.pi * radius * 2 * half_height, math.pi * radius**2, math.pi * radius**2])
    region = torch.multinomial(areas.to(torch.float64), count, replacement=True, generator=generator)
    angle = 2 * math.pi * torch.rand(count, generator=generator, dtype=torch.float64)
    # sqrt makes the cap samples uniform over the disc's area.
    cap_radius = radius * torch.rand(count, generator=generator, dtype=torch.float64).sqrt()
    z = (2.0 * torch.rand(count, generator=generator, dtype=torch.float64) - 1.0) * half_height
    side = region == 0
    ring = torch.where(side, torch.full_like(cap_radius, radius), cap_radius)
    cap_z = torch.where(region == 1, half_height, -half_height).to(torch.float64)
    points = torch.stack([ring * torch.cos(angle), ring * torch.sin(angle), torch.where(side, z, cap_z)], dim=-1)
    normals = torch.zeros(count, 3, dtype=torch.float64)
    normals[side, 0], normals[side, 1] = torch.cos(angle[side]), torch.sin(angle[side])
    normals[~side, 2] = torch.where(region[~side] == 1, 1.0, -1.0).to(torch.float64)
    return points, normals


def sample_surface(
    instance: ObjectInstance, count: int, generator: torch.Generator
) -> Tuple[Float[Tensor, "count 3"], Float[Tensor, "count 3"]]:
    """``count`` area-uniform points on the outer surface of the union of parts, with outward unit normals."""
    scene = instance.scene()
    areas = torch.tensor([part_area(part) for part in instance.parts], dtype=torch.float64)
    points, normals, found = [], [], 0
    while found < count:
        batch = int(1.5 * (count - found)) + 64
        owner = torch.multinomial(areas, batch, replacement=True, generator=generator)
        batch_points = torch.empty(batch, 3, dtype=torch.float64)
        batch_normals = torch.empty(batch, 3, dtype=torch.float64)
        for index, part in enumerate(instance.parts):
            chosen = (owner == index).nonzero()[:, 0]
            if chosen.numel() == 0:
                continue
            size = torch.tensor(part.size, dtype=torch.float64)
            sampler = _local_box_samples if part.kind == "box" else _local_cylinder_samples
            local_points, local_normals = sampler(size, chosen.numel(), generator)
            rotation = torch.tensor(part.rotation, dtype=torch.float64).reshape(3, 3)
            batch_points[chosen] = local_points @ rotation.T + torch.tensor(part.center, dtype=torch.float64)
            batch_normals[chosen] = local_normals @ rotation.T
        exposed = ~scene.occupied(batch_points + OUTSIDE_STEP * batch_normals)
        points.append(batch_points[exposed])
        normals.append(batch_normals[exposed])
        found += int(exposed.sum())
    return torch.cat(points)[:count], torch.cat(normals)[:count]
