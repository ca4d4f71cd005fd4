"""Analytic primitives: exact ray casting (against dense marching), inside tests, normals, JSON round trip."""

import math

import pytest
import torch

from bts_studio.data.synthetic.primitives import (
    Primitive,
    Scene,
    make_box,
    make_ellipsoid,
    make_ground,
    make_sphere,
    make_vertical_cylinder,
    rotation_z,
)
from bts_studio.data.synthetic.raycast import tile_order

OFFSET = (3000.0, -1500.0, 120.0)  # far from the origin, like KITTI-360 worlds


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shift(point):
    return tuple(p + o for p, o in zip(point, OFFSET, strict=True))


def _random_scene(seed: int = 0) -> Scene:
    generator = torch.Generator().manual_seed(seed)
    primitives = [make_ground(OFFSET[2] - 1.0, label="ground")]
    tilt = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)  # a lying cylinder (axis along y)
    for index in range(24):
        center = (torch.rand(3, generator=generator) * 16 - 8).tolist()
        center[2] = abs(center[2]) * 0.3
        size = (torch.rand(3, generator=generator) * 1.5 + 0.3).tolist()
        yaw = float(torch.rand(1, generator=generator)) * math.pi
        kind = index % 4
        if kind == 0:
            primitives.append(make_box(_shift(center), size, yaw=yaw))
        elif kind == 1:
            primitives.append(make_vertical_cylinder(_shift(center), size[0], size[2]))
        elif kind == 2:
            primitives.append(make_ellipsoid(_shift(center), size, yaw=yaw))
        else:
            primitives.append(Primitive("cylinder", _shift(center), (size[0], size[0], size[1]), tilt))
    return Scene(primitives)


def _march(scene: Scene, origin: torch.Tensor, direction: torch.Tensor, far: float, steps: int) -> float:
    t = torch.linspace(far / steps, far, steps, dtype=torch.float64)
    inside = scene.occupied(origin + t[:, None] * direction)
    first = inside.nonzero()
    return float(t[first[0, 0]]) if len(first) else math.inf


def test_raycast_matches_dense_marching():
    scene = _random_scene()
    generator = torch.Generator().manual_seed(1)
    count = 40
    origins = torch.tensor(_shift((0.0, 0.0, 4.0)), dtype=torch.float64) + torch.randn(
        count, 3, generator=generator, dtype=torch.float64
    )
    directions = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    directions[:, 2] -= 0.4
    directions = 1.7 * directions / directions.norm(dim=-1, keepdim=True)  # not unit: t is in these units
    hits = scene.raycast(origins, directions)
    step = 30.0 / 60000
    compared = 0
    for index in range(count):
        if scene.occupied(origins[index : index + 1]).item():
            continue  # the marching reference cannot tell where a ray starting inside first meets a surface
        marched = _march(scene, origins[index], directions[index], 30.0, 60000)
        if math.isinf(marched):
            assert hits.t[index] > 30.0 - step, index  # a miss, or a hit beyond the marched range
        else:
            compared += 1
            assert abs(marched - hits.t[index].item()) <= step * 1.01, index
            assert hits.primitive_id[index] >= 0
            assert (hits.normal[index].double() @ directions[index]) < 0  # outward normal faces the ray
    assert compared >= count // 2


def test_shared_origin_fast_path_and_any_ray_order_give_identical_hits():
    scene = _random_scene(2)
    origin = torch.tensor(_shift((0.0, 0.0, 3.0)), dtype=torch.float64)
    directions = torch.randn(3000, 3, generator=torch.Generator().manual_seed(3))
    shared = scene.raycast(origin, directions)
    per_ray = scene.raycast(origin.expand(3000, 3).clone(), directions)
    order = torch.randperm(3000, generator=torch.Generator().manual_seed(4))
    shuffled = scene.raycast(origin, directions[order], chunk=64)
    for a, b in ((shared, per_ray), (shared, RayHitsPermuted(shuffled, order))):
        torch.testing.assert_close(a.t, b.t, rtol=1e-5, atol=1e-5)
        assert torch.equal(a.primitive_id, b.primitive_id)
        torch.testing.assert_close(a.normal, b.normal, rtol=1e-4, atol=1e-4)


def RayHitsPermuted(hits, order):  # noqa: N802 - reads like the tuple it builds
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    return type(hits)(hits.t[inverse], hits.primitive_id[inverse], hits.normal[inverse])


def test_inside_tests_are_exact_on_the_boundary_and_just_beyond():
    box = make_box(_shift((0.0, 0.0, 0.0)), (2.0, 1.0, 0.5), yaw=math.pi / 6)
    cylinder = make_vertical_cylinder(_shift((10.0, 0.0, 0.0)), 0.5, 1.0)
    sphere = make_sphere(_shift((0.0, 10.0, 0.0)), 1.5)
    scene = Scene([box, cylinder, sphere])
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    corner_x, corner_y = 2.0 * c - 1.0 * s, 2.0 * s + 1.0 * c  # the box corner (2, 1, 0.5) in world
    eps = 1e-3
    cases = {
        (corner_x * (1 - eps), corner_y * (1 - eps), 0.5 * (1 - eps)): True,
        (corner_x * (1 + eps), corner_y * (1 + eps), 0.0): False,
        (10.0 + 0.5 - eps, 0.0, 1.0 - eps): True,
        (10.0 + 0.5 + eps, 0.0, 0.0): False,
        (10.0, 0.0, 1.0 + eps): False,
        (0.0, 10.0 + 1.5 - eps, 0.0): True,
        (1.5 / math.sqrt(3) * (1 + eps), 10.0 + 1.5 / math.sqrt(3) * (1 + eps), 1.5 / math.sqrt(3) * (1 + eps)): False,
    }
    points = torch.tensor([_shift(p) for p in cases], dtype=torch.float64)
    assert scene.occupied(points).tolist() == list(cases.values())
    ground = Scene([make_ground(OFFSET[2])])
    assert ground.occupied(
        torch.tensor([_shift((5, 5, -1e-4)), _shift((5, 5, 1e-4))], dtype=torch.float64)
    ).tolist() == [True, False]


def test_json_round_trip_keeps_geometry_and_attributes(tmp_path):
    scene = _random_scene(5)
    scene.metadata["note"] = "kept"
    scene.save(tmp_path / "scene.json")
    loaded = Scene.load(tmp_path / "scene.json")
    assert loaded.primitives == scene.primitives and loaded.metadata == {"note": "kept"}
    points = torch.tensor(_shift((0.0, 0.0, 0.0)), dtype=torch.float64) + torch.randn(500, 3, dtype=torch.float64) * 6
    assert torch.equal(scene.occupied(points), loaded.occupied(points))
    with pytest.raises(ValueError, match="rotation"):
        Primitive("box", (0, 0, 0), (1, 1, 1), (1, 0, 0, 0, 1, 0, 0, 0, -1))
    with pytest.raises(ValueError, match="kind"):
        Primitive("cone", (0, 0, 0), (1, 1, 1))
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="bad.json"):
        Scene.load(tmp_path / "bad.json")


def test_tile_order_is_a_permutation_of_tiles():
    order = tile_order(37, 50, tile=16)
    assert torch.equal(order.sort().values, torch.arange(37 * 50))
    rows, cols = order[:256] // 50, order[:256] % 50
    assert rows.max() < 16 and cols.max() < 16


def test_rotation_z_turns_x_towards_y():
    matrix = torch.tensor(rotation_z(math.pi / 2)).view(3, 3)
    torch.testing.assert_close(matrix @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
