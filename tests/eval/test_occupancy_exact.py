"""The exact variant on analytic scenes: numbers computed by hand, and a perfect oracle."""

import pytest
import torch

from bts_studio.data.synthetic.primitives import Scene, make_box
from bts_studio.eval.density_field import FrameField, depth_plus_band_field
from bts_studio.eval.occupancy import tilt_rotation
from bts_studio.eval.occupancy_exact import ExactGrid, evaluate_exact_frame, exact_reference

WIDE_K = torch.tensor([[50.0, 0.0, 100.0], [0.0, 50.0, 100.0], [0.0, 0.0, 1.0]])  # 200 x 200, ~126 deg wide


def camera_in_tilted_world() -> torch.Tensor:
    """World = the camera's tilted frame, so the query cuboid is axis-aligned in world coordinates."""
    c2w = torch.eye(4)
    c2w[:3, :3] = tilt_rotation()  # p_tilted = R p_camera
    return c2w


def wall_scene() -> Scene:
    """A wall across the whole cuboid, 10..11 m ahead."""
    return Scene([make_box((0.0, 0.0, 10.5), (50.0, 50.0, 0.5), label="wall")])


def all_empty() -> FrameField:
    return FrameField(lambda p: torch.zeros(len(p)), torch.full((200, 200), 80.0), WIDE_K)


def oracle(scene: Scene, c2w: torch.Tensor) -> FrameField:
    """Answers density from the analytic scene and depth by ray casting each pixel."""

    def density(points_camera):
        world = points_camera.double() @ c2w[:3, :3].double().T + c2w[:3, 3].double()
        return scene.occupied(world).float() * 100.0

    rows, columns = torch.meshgrid(torch.arange(200) + 0.5, torch.arange(200) + 0.5, indexing="ij")
    rays = torch.stack([(columns - 100.0) / 50.0, (rows - 100.0) / 50.0, torch.ones_like(rows)], -1).reshape(-1, 3)
    hits = scene.raycast(c2w[:3, 3].expand(len(rays), 3).contiguous(), rays @ c2w[:3, :3].T)
    depth = hits.t.clamp_max(80.0).reshape(200, 200)  # z-depth: the camera-frame direction has z = 1
    return FrameField(density, depth, WIDE_K)


def test_all_empty_model_by_hand():
    # Grid: 80 x-samples, 4 y-levels, z_k = 3 + 17 k / 169 for k = 0..169 -> 54,400 points, all inside the image.
    # Wall 10..11 m: k = 70..79 (10.04 .. 10.95 m) -> 10 rows occupied; k >= 70 invisible (100 rows).
    frame = evaluate_exact_frame(all_empty(), wall_scene(), camera_in_tilted_world())
    assert frame.query_tilted.shape == (80 * 4 * 170, 3)
    assert int(frame.gt_occupied.sum()) == 80 * 4 * 10
    assert int((~frame.visible).sum()) == 80 * 4 * 100
    assert frame.metrics["o_acc"] == pytest.approx(1 - 10 / 170)
    assert frame.metrics["ie_acc"] == pytest.approx(90 / 100)
    assert frame.metrics["ie_rec"] == pytest.approx(1.0)
    assert frame.metrics["o_rec"] == 0.0


def test_oracle_scores_perfectly_and_depth_baseline_does_not():
    scene = Scene(
        [
            make_box((1.0, 0.5, 8.0), (1.0, 1.0, 2.0), label="car"),
            make_box((-2.5, 0.0, 14.0), (0.5, 2.0, 0.5), label="pole"),
            make_box((0.0, 0.0, 19.0), (10.0, 5.0, 0.4), label="house"),
        ]
    )
    c2w = camera_in_tilted_world()
    c2w[:3, 3] = torch.tensor([0.3, -0.2, 0.1])
    grid = ExactGrid(x_range=(-4.0, 4.0), y_range=(0.0, 1.0), z_range=(3.0, 20.0), points_per_metre_xz=5.0)
    model = oracle(scene, c2w)
    frame = evaluate_exact_frame(model, scene, c2w, grid)
    assert frame.gt_occupied.any() and (~frame.visible & ~frame.gt_occupied).any()
    assert frame.metrics["o_acc"] == 1.0 and frame.metrics["ie_acc"] == 1.0 and frame.metrics["ie_rec"] == 1.0
    baseline = evaluate_exact_frame(depth_plus_band_field(model, 4.0), scene, c2w, grid)
    assert baseline.metrics["ie_rec"] < 1.0 and baseline.metrics["o_acc"] < 1.0


def test_points_outside_the_image_are_invisible():
    narrow_K = torch.tensor([[500.0, 0.0, 100.0], [0.0, 500.0, 100.0], [0.0, 0.0, 1.0]])  # 22 deg wide
    query = torch.tensor([[0.0, 0.5, 5.0], [4.0, 0.5, 5.0]])
    occupied, visible = exact_reference(Scene([]), query, camera_in_tilted_world(), narrow_K, 200, 200)
    assert occupied.tolist() == [False, False] and visible.tolist() == [True, False]


def test_oracle_scores_one_on_a_generated_street():
    import numpy as np

    from bts_studio.data.synthetic.rig import build_rig
    from bts_studio.data.synthetic.street import build_street, ego_poses

    rng = np.random.default_rng(0)  # seed 0, frame 6: parked cars put ~7% of the cuboid inside solids
    world = build_street(rng, drive_length=30.0, origin_xy=(2400.0, 1300.0), ground_z=115.0)
    scene = Scene(world.primitives, origin=(2400.0, 1300.0, 115.0))
    rig = build_rig(scale=0.15)
    c2w = torch.from_numpy(rig.camera_to_world(ego_poses(world.layout, 12, 2, rng)[6], 0))
    width, height = rig.perspective_size
    P = rig.projection[0]
    K = torch.tensor([[P[0, 0], 0.0, P[0, 2] + 0.5], [0.0, P[1, 1], P[1, 2] + 0.5], [0.0, 0.0, 1.0]])

    def density(points_camera):
        world_points = points_camera.double() @ c2w[:3, :3].T + c2w[:3, 3]
        return scene.occupied(world_points).float() * 100.0

    model = FrameField(density, torch.full((height, width), 80.0), K.float())
    frame = evaluate_exact_frame(model, scene, c2w, ExactGrid(points_per_metre_xz=5.0))
    assert frame.gt_occupied.any(), "the street should put something solid into the cuboid"
    assert (~frame.visible & ~frame.gt_occupied).any() and frame.visible.any()
    assert frame.metrics["o_acc"] == 1.0 and frame.metrics["ie_acc"] == 1.0 and frame.metrics["ie_rec"] == 1.0
