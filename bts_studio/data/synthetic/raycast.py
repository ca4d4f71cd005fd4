"""Exact ray casting and inside tests against analytic primitives, vectorised in torch (CPU or CUDA).

Every primitive is a convex set described in its own local frame (``local = R^T (world - centre)``):

* ``box``: ``|x| <= sx, |y| <= sy, |z| <= sz`` (``size`` = half extents);
* ``cylinder``: ``(x/sx)^2 + (y/sy)^2 <= 1, |z| <= sz`` (axis = local z; ``sx = sy`` = radius);
* ``ellipsoid``: ``(x/sx)^2 + (y/sy)^2 + (z/sz)^2 <= 1``;
* ``halfspace``: ``z <= 0`` (``size`` unused), e.g. the ground.

A ray ``o + t d`` meets a convex set on one interval ``[t_near, t_far]``; the hit is the first end of that
interval that lies ahead of ``t_min``. ``t`` is measured in units of the given (not necessarily unit)
direction, so a camera ray with ``d_z = 1`` in camera coordinates returns z-depth directly.

Speed comes from culling: consecutive rays are grouped in chunks (callers order image rays by tiles so
that a chunk is a narrow cone), and a chunk only tests primitives whose bounding sphere meets the chunk's
bounding cone, front to back in rounds of increasing distance: a primitive that is farther than every ray
of the chunk has already hit something is skipped. The culling is conservative, so results are exact.
Everything is plain torch (no custom kernels), so it runs wherever the tensors live.
"""

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Tuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

KINDS = ("box", "cylinder", "ellipsoid", "halfspace")
KIND_INDEX = {kind: index for index, kind in enumerate(KINDS)}

RAY_CHUNK = 256
"""Rays per culling chunk (a 16 x 16 pixel tile when rays come in tile order)."""

PAIR_BUDGET = 1 << 21
"""Ray-primitive tests evaluated at once; bounds the temporary memory (~40 floats each)."""

_EPS = 1e-12
_ID_BITS = 24  # primitive ids packed below the float bits of t, see _pack_hits


@dataclass
class PackedPrimitives:
    """Primitive parameters as tensors on one device, coordinates relative to the scene origin.

    Attributes:
        kinds: ``[P]`` index into :data:`KINDS`.
        centers: ``[P, 3]``.
        rotations: ``[P, 3, 3]`` local -> world (columns are the local axes).
        sizes: ``[P, 3]`` see the module docstring.
        bound_radii: ``[P]`` bounding-sphere radii around ``centers`` (``inf`` for half-spaces).
    """

    kinds: Int[Tensor, " P"]
    centers: Float[Tensor, "P 3"]
    rotations: Float[Tensor, "P 3 3"]
    sizes: Float[Tensor, "P 3"]
    bound_radii: Float[Tensor, " P"]

    def __len__(self) -> int:
        return int(self.kinds.shape[0])


class RayHits(NamedTuple):
    """Result of :func:`cast_rays`.

    Attributes:
        t: ``[N]`` ray parameter of the first hit (units of the given direction), ``inf`` on a miss.
        primitive_id: ``[N]`` int64 index of the hit primitive, ``-1`` on a miss.
        normal: ``[N, 3]`` unit outward normal at the hit (world axes), zeros on a miss.
    """

    t: Float[Tensor, " N"]
    primitive_id: Int[Tensor, " N"]
    normal: Float[Tensor, "N 3"]


def bounding_radii(kinds: Tensor, sizes: Tensor) -> Tensor:
    """Bounding-sphere radius of each primitive around its centre."""
    box = sizes.norm(dim=-1)
    cylinder = torch.sqrt(sizes[:, :2].amax(dim=-1) ** 2 + sizes[:, 2] ** 2)
    ellipsoid = sizes.amax(dim=-1)
    radii = torch.where(kinds == KIND_INDEX["box"], box, ellipsoid)
    radii = torch.where(kinds == KIND_INDEX["cylinder"], cylinder, radii)
    return torch.where(kinds == KIND_INDEX["halfspace"], torch.full_like(radii, float("inf")), radii)


def _safe_reciprocal(values: Tensor) -> Tensor:
    # A zero direction component becomes a huge-but-finite reciprocal, so slab tests never see 0 * inf = NaN.
    sign = torch.where(values < 0, -1.0, 1.0).to(values.dtype)
    return 1.0 / torch.where(values.abs() < _EPS, sign * _EPS, values)


def _slab(origin: Tensor, inv_direction: Tensor, half: Tensor) -> Tuple[Tensor, Tensor]:
    t1 = (-half - origin) * inv_direction
    t2 = (half - origin) * inv_direction
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _quadric_interval(a: Tensor, half_b: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """Interval where ``a t^2 + 2 half_b t + c <= 0`` (a >= 0), as (near, far); empty gives near > far."""
    inf = torch.full_like(a, float("inf"))
    discriminant = half_b * half_b - a * c
    root = discriminant.clamp_min(0.0).sqrt()
    # Stable roots: q has no cancellation; the two roots are q / a and c / q.
    q = -(half_b + torch.where(half_b < 0, -root, root))
    q_safe = torch.where(q.abs() < _EPS, torch.full_like(q, _EPS), q)
    a_safe = torch.where(a < _EPS, torch.ones_like(a), a)
    r1, r2 = q / a_safe, c / q_safe
    near, far = torch.minimum(r1, r2), torch.maximum(r1, r2)
    parallel = a < _EPS  # direction has no component that changes the quadric: inside everywhere or nowhere
    near = torch.where(parallel, torch.where(c <= 0, -inf, inf), near)
    far = torch.where(parallel, torch.where(c <= 0, inf, -inf), far)
    missed = (discriminant < 0) & ~parallel
    return torch.where(missed, inf, near), torch.where(missed, -inf, far)


def local_intervals(kind: int, origin: Tensor, direction: Tensor, size: Tensor) -> Tuple[Tensor, Tensor]:
    """Entry/exit ray parameters of one primitive kind, rays and sizes already in the local frame.

    Args:
        kind: index into :data:`KINDS`.
        origin, direction: ``[..., 3]`` local ray origins and directions.
        size: ``[..., 3]`` broadcastable primitive sizes.

    Returns:
        ``(near, far)``, each ``[...]``; the ray misses when ``near > far``.
    """
    if kind == KIND_INDEX["box"]:
        near, far = _slab(origin, _safe_reciprocal(direction), size)
        return near.amax(dim=-1), far.amin(dim=-1)
    if kind == KIND_INDEX["halfspace"]:
        oz, dz = origin[..., 2], direction[..., 2]
        inf = torch.full_like(oz, float("inf"))
        crossing = -oz * _safe_reciprocal(dz)
        parallel = dz.abs() < _EPS
        near = torch.where(dz < 0, crossing, -inf)
        far = torch.where(dz < 0, inf, crossing)
        near = torch.where(parallel, torch.where(oz <= 0, -inf, inf), near)
        far = torch.where(parallel, torch.where(oz <= 0, inf, -inf), far)
        return near, far
    scaled_origin = origin / size
    scaled_direction = direction / size
    if kind == KIND_INDEX["ellipsoid"]:
        a = (scaled_direction * scaled_direction).sum(dim=-1)
        half_b = (scaled_origin * scaled_direction).sum(dim=-1)
        c = (scaled_origin * scaled_origin).sum(dim=-1) - 1.0
        return _quadric_interval(a, half_b, c)
    if kind == KIND_INDEX["cylinder"]:
        oxy, dxy = scaled_origin[..., :2], scaled_direction[..., :2]
        near, far = _quadric_interval((dxy * dxy).sum(-1), (oxy * dxy).sum(-1), (oxy * oxy).sum(-1) - 1.0)
        z_near, z_far = _slab(origin[..., 2], _safe_reciprocal(direction[..., 2]), size[..., 2])
        return torch.maximum(near, z_near), torch.minimum(far, z_far)
    raise ValueError(f"unknown primitive kind {kind}")


def local_inside(kind: int, points: Tensor, size: Tensor) -> Tensor:
    """Exact inside test (boundary counts as inside) for points in the local frame."""
    if kind == KIND_INDEX["box"]:
        return (points.abs() <= size).all(dim=-1)
    if kind == KIND_INDEX["halfspace"]:
        return points[..., 2] <= 0
    scaled = points / size
    if kind == KIND_INDEX["ellipsoid"]:
        return (scaled * scaled).sum(dim=-1) <= 1.0
    if kind == KIND_INDEX["cylinder"]:
        return ((scaled[..., :2] ** 2).sum(dim=-1) <= 1.0) & (points[..., 2].abs() <= size[..., 2])
    raise ValueError(f"unknown primitive kind {kind}")


def local_normals(kind: int, points: Tensor, size: Tensor) -> Tensor:
    """Outward unit normals (local frame) at surface points given in the local frame."""
    if kind == KIND_INDEX["box"]:
        # The face whose slab bound is closest to the point (relative to its half extent).
        ratio = points.abs() / size
        axis = ratio.argmax(dim=-1, keepdim=True)
        normal = torch.zeros_like(points).scatter_(-1, axis, 1.0)
        return normal * torch.where(points < 0, -1.0, 1.0).to(points.dtype)
    if kind == KIND_INDEX["halfspace"]:
        normal = torch.zeros_like(points)
        normal[..., 2] = 1.0
        return normal
    if kind == KIND_INDEX["ellipsoid"]:
        normal = points / (size * size)
    elif kind == KIND_INDEX["cylinder"]:
        side = points / (size * size)
        side = torch.stack([side[..., 0], side[..., 1], torch.zeros_like(side[..., 0])], dim=-1)
        radial = ((points[..., :2] / size[..., :2]) ** 2).sum(dim=-1).sqrt()
        cap_distance = (points[..., 2].abs() - size[..., 2]).abs() / size[..., 2]
        on_cap = cap_distance < (radial - 1.0).abs()
        cap = torch.zeros_like(points)
        cap[..., 2] = torch.where(points[..., 2] < 0, -1.0, 1.0).to(points.dtype)
        normal = torch.where(on_cap[..., None], cap, side)
    else:
        raise ValueError(f"unknown primitive kind {kind}")
    return normal / normal.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def _pad_to_chunks(values: Tensor, chunk: int) -> Tensor:
    """``[N, ...]`` -> ``[C, chunk, ...]``, repeating the last entry (padding lanes duplicate a real ray)."""
    pad = (-values.shape[0]) % chunk
    if pad:
        values = torch.cat([values, values[-1:].expand(pad, *values.shape[1:])])
    return values.reshape(-1, chunk, *values.shape[1:])


def _chunk_bounds(origins: Tensor, unit: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per chunk (``[C, chunk, 3]`` inputs): origin-sphere centre ``[C, 3]`` and radius ``[C]``, cone axis
    ``[C, 3]`` and the cosine of the cone's half-angle ``[C]``."""
    center = origins.mean(dim=1)
    radius = (origins - center[:, None]).norm(dim=-1).amax(dim=1)
    axis = unit.sum(dim=1)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    cos_half = (unit * axis[:, None]).sum(dim=-1).amin(dim=1)
    return center, radius, axis, cos_half


def _candidates(
    center: Tensor, radius: Tensor, axis: Tensor, cos_half: Tensor, primitives: PackedPrimitives
) -> Tuple[Tensor, Tensor]:
    """Which primitives a chunk of rays can hit, and how far away they are at least.

    Returns:
        ``[C, P]`` bool: the primitive's bounding sphere meets the chunk's cone of rays (conservative), and
        ``[C, P]`` a lower bound on the distance from any of the chunk's origins to any point of the primitive.
    """
    offset = primitives.centers[None] - center[:, None]  # [C, P, 3]
    distance = offset.norm(dim=-1)
    reach = primitives.bound_radii[None] + radius[:, None] + 1e-4
    cos_to_center = (offset * axis[:, None]).sum(dim=-1) / distance.clamp_min(_EPS)
    angle_to_center = torch.acos(cos_to_center.clamp(-1.0, 1.0))
    angular_radius = torch.asin((reach / distance.clamp_min(_EPS)).clamp(max=1.0))
    half_angle = torch.acos(cos_half.clamp(-1.0, 1.0))[:, None]
    meets = angle_to_center - angular_radius <= half_angle + 1e-4
    unbounded = torch.isinf(primitives.bound_radii)[None]
    near = torch.where(unbounded, torch.zeros_like(distance), (distance - reach).clamp_min(0.0))
    return meets | (distance <= reach) | unbounded, near


def _pack_hits(t: Tensor, primitive_id: Tensor) -> Tensor:
    """Sortable int64 keys: for t >= 0 the float32 bit pattern is monotonic, so min(key) = (min t, min id)."""
    bits = t.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return (bits << _ID_BITS) | primitive_id


_NO_HIT = int(_pack_hits(torch.tensor(float("inf")), torch.tensor((1 << _ID_BITS) - 1)))


def _pair_batches(pairs: Tensor, chunk: int) -> Iterator[Tensor]:
    step = max(1, PAIR_BUDGET // chunk)
    for start in range(0, pairs.shape[0], step):
        yield pairs[start : start + step]


DISTANCE_ROUNDS = (6.0, 15.0, 35.0, 80.0, float("inf"))
"""Candidates are intersected in rounds of increasing minimal distance (metres in the units of the scene)."""


def _decode_t(best: Tensor) -> Tensor:
    t = (best >> _ID_BITS).to(torch.int32).view(torch.float32)
    missed = (best & ((1 << _ID_BITS) - 1)) == (1 << _ID_BITS) - 1
    return torch.where(missed, torch.full_like(t, float("inf")), t)


def _chunk_far(best: Tensor, lengths: Tensor) -> Tensor:
    """Per chunk, the largest distance at which one of its rays currently hits (``inf`` if one misses)."""
    return (_decode_t(best) * lengths).amax(dim=1)


def _intersect_batch(
    primitives: PackedPrimitives,
    kind: int,
    batch: Tensor,
    origins: Tensor,
    directions: Tensor,
    t_min: float,
    best: Tensor,
) -> None:
    """Intersect the rays of each (chunk, primitive) pair in ``batch`` and fold the hits into ``best``.

    ``directions`` and ``best`` are chunked (``[C, chunk, 3]``, ``[C, chunk]``); ``origins`` too, or ``[3]``.
    """
    chunk_index, prim = batch[:, 0], batch[:, 1]
    rotation = primitives.rotations.index_select(0, prim)  # [B, 3, 3]; row vectors times R apply R^T
    if origins.dim() == 1:
        local_origin = ((origins - primitives.centers.index_select(0, prim))[:, :, None] * rotation).sum(dim=1)[:, None]
    else:
        offset = origins.index_select(0, chunk_index) - primitives.centers.index_select(0, prim)[:, None]
        local_origin = torch.bmm(offset, rotation)
    local_direction = torch.bmm(directions.index_select(0, chunk_index), rotation)
    near, far = local_intervals(kind, local_origin, local_direction, primitives.sizes.index_select(0, prim)[:, None])
    t = torch.where(near > t_min, near, far)
    hit = (near <= far) & (t > t_min) & (t < float("inf"))
    keys = torch.where(hit, _pack_hits(t.clamp_min(0.0), prim[:, None]), _NO_HIT)
    best.scatter_reduce_(0, chunk_index[:, None].expand_as(keys), keys, reduce="amin")


def cast_rays(
    primitives: PackedPrimitives,
    origins: Float[Tensor, "*N 3"],
    directions: Float[Tensor, "N 3"],
    t_min: float = 1e-4,
    chunk: int = RAY_CHUNK,
) -> RayHits:
    """First hit of each ray (see the module docstring); origins relative to the scene origin.

    ``origins`` is ``[N, 3]``, or ``[3]`` when all rays share one origin (cameras): then the local origin is
    computed once per primitive instead of once per ray.
    """
    shared = origins.dim() == 1
    assert directions.dim() == 2 and directions.shape[-1] == 3, f"directions must be [N, 3], got {directions.shape}"
    assert (
        (origins.shape == (3,)) if shared else (origins.shape == directions.shape)
    ), f"origins must be [3] or [N, 3] like directions, got {tuple(origins.shape)} and {tuple(directions.shape)}"
    assert len(primitives) < (1 << _ID_BITS), "too many primitives for the packed hit keys"
    count, device = directions.shape[0], directions.device
    best = torch.full((count,), _NO_HIT, dtype=torch.int64, device=device)
    if count and len(primitives):
        chunked_directions = _pad_to_chunks(directions, chunk)
        lengths = chunked_directions.norm(dim=-1)
        unit = chunked_directions / lengths[..., None].clamp_min(_EPS)
        chunked_origins = origins if shared else _pad_to_chunks(origins, chunk)
        center, radius, axis, cos_half = _chunk_bounds(origins.expand(*unit.shape) if shared else chunked_origins, unit)
        candidates, near = _candidates(center, radius, axis, cos_half, primitives)
        chunked_best = torch.full(lengths.shape, _NO_HIT, dtype=torch.int64, device=device)
        lower = 0.0
        for upper in DISTANCE_ROUNDS:
            # Front to back: skip primitives farther than every ray of the chunk has already hit something.
            selected = candidates & (near >= lower) & (near < upper)
            if lower > 0.0:
                selected &= near <= _chunk_far(chunked_best, lengths)[:, None]
            lower = upper
            for kind in range(len(KINDS)):
                pairs = ((primitives.kinds == kind)[None] & selected).nonzero()
                for batch in _pair_batches(pairs, chunk):
                    _intersect_batch(primitives, kind, batch, chunked_origins, chunked_directions, t_min, chunked_best)
        best = chunked_best.view(-1)[:count]
    primitive_id = best & ((1 << _ID_BITS) - 1)
    missed = primitive_id == (1 << _ID_BITS) - 1
    t = _decode_t(best)
    primitive_id = torch.where(missed, torch.full_like(primitive_id, -1), primitive_id)
    normal = torch.zeros_like(directions)
    hit_rays = (~missed).nonzero()[:, 0]
    if hit_rays.numel():
        hit_origins = origins if shared else origins.index_select(0, hit_rays)
        points = hit_origins + t.index_select(0, hit_rays)[:, None] * directions.index_select(0, hit_rays)
        normal.index_copy_(0, hit_rays, surface_normals(primitives, points, primitive_id.index_select(0, hit_rays)))
    return RayHits(t=t, primitive_id=primitive_id, normal=normal)


def to_local(primitives: PackedPrimitives, points: Tensor, primitive_id: Tensor) -> Tensor:
    """Points (relative to the scene origin) in the local frame of the given primitives."""
    offset = points - primitives.centers.index_select(0, primitive_id)
    return torch.bmm(offset[:, None, :], primitives.rotations.index_select(0, primitive_id))[:, 0]


def surface_normals(primitives: PackedPrimitives, points: Tensor, primitive_id: Tensor) -> Tensor:
    """Outward unit normals (world axes) at surface points of the given primitives."""
    local = to_local(primitives, points, primitive_id)
    normals = torch.zeros_like(points)
    kinds = primitives.kinds.index_select(0, primitive_id)
    for kind in range(len(KINDS)):
        select = (kinds == kind).nonzero()[:, 0]
        if select.numel():
            sizes = primitives.sizes.index_select(0, primitive_id.index_select(0, select))
            normals.index_copy_(0, select, local_normals(kind, local.index_select(0, select), sizes))
    return torch.bmm(normals[:, None, :], primitives.rotations.index_select(0, primitive_id).transpose(1, 2))[:, 0]


def inside_any(
    primitives: PackedPrimitives, points: Float[Tensor, "N 3"], chunk: int = RAY_CHUNK
) -> Bool[Tensor, " N"]:
    """Whether each point (relative to the scene origin) lies inside at least one primitive.

    Points are grouped in chunks of consecutive points (pass spatially coherent orders, e.g. grids, for
    speed); a chunk only tests primitives whose bounding sphere meets the chunk's bounding sphere.
    """
    assert points.dim() == 2 and points.shape[-1] == 3, f"points must be [N, 3], got {tuple(points.shape)}"
    count, device = points.shape[0], points.device
    if count == 0 or len(primitives) == 0:
        return torch.zeros(count, dtype=torch.bool, device=device)
    grouped = _pad_to_chunks(points, chunk)
    inside_count = torch.zeros(grouped.shape[:2], dtype=torch.int32, device=device)
    center = grouped.mean(dim=1)
    radius = (grouped - center[:, None]).norm(dim=-1).amax(dim=1)
    distance = (primitives.centers[None] - center[:, None]).norm(dim=-1)
    candidates = distance <= primitives.bound_radii[None] + radius[:, None] + 1e-4
    for kind in range(len(KINDS)):
        pairs = ((primitives.kinds == kind)[None] & candidates).nonzero()
        for batch in _pair_batches(pairs, chunk):
            chunk_index, prim = batch[:, 0], batch[:, 1]
            offset = grouped.index_select(0, chunk_index) - primitives.centers.index_select(0, prim)[:, None]
            local = torch.bmm(offset, primitives.rotations.index_select(0, prim))
            inside = local_inside(kind, local, primitives.sizes.index_select(0, prim)[:, None])
            inside_count.index_add_(0, chunk_index, inside.to(torch.int32))
    return inside_count.view(-1)[:count] > 0


def tile_order(height: int, width: int, tile: int = 16) -> Int[Tensor, " HW"]:
    """Permutation of row-major pixel indices that lists pixels tile by tile (``tile x tile`` squares).

    Casting rays in this order makes each :data:`RAY_CHUNK` a narrow cone, which is what the culling needs.
    ``pixels_flat[tile_order(H, W)]`` reorders; ``out[tile_order(H, W)] = values`` scatters back.
    """
    rows = torch.arange(height)
    cols = torch.arange(width)
    tile_row, tile_col = rows // tile, cols // tile
    key = (tile_row[:, None] * ((width + tile - 1) // tile) + tile_col[None]) * tile * tile
    key = key + (rows % tile)[:, None] * tile + (cols % tile)[None]
    return torch.argsort(key.flatten(), stable=True)
