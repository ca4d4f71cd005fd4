"""The source rules (viewer, ns-render, ns-eval) and the camera paths built for ns-render, without a checkpoint."""

import math

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras

from bts_studio.core.compositing import occupancy_behind_surface
from bts_studio.eval.camera_path_cli import path_poses
from bts_studio.eval.ns_render_paths import interpolated_cameras, level_spiral, path_cameras_from_json
from bts_studio.methods.common.conditioning_rules import (
    CAM_IDX_KEY,
    OWN_INDEX_KEY,
    OWN_SPLIT_KEY,
    ChoiceLog,
    SourceCatalogue,
    SourceRequest,
    SourceRule,
    check_index,
    choose_source,
    path_metadata,
)


def pose(position, forward) -> torch.Tensor:
    """OpenGL camera-to-world [3, 4] at ``position`` looking along ``forward`` (level, world z up)."""
    forward = torch.tensor(forward, dtype=torch.float32)
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    return torch.stack([right, up, -forward, torch.tensor(position, dtype=torch.float32)], dim=1)


@pytest.fixture
def catalogue() -> SourceCatalogue:
    # Image 0 at the origin looking +x; image 1 10 m ahead looking +x; image 2 at 1 m looking back (-x).
    poses = torch.stack([pose([0, 0, 0], [1, 0, 0]), pose([10, 0, 0], [1, 0, 0]), pose([1, 0, 0], [-1, 0, 0])])
    return SourceCatalogue.from_camera_to_worlds(poses, direction_weight=10.0)


def test_rules_apply_in_order(catalogue):
    here = pose([9, 0, 0], [1, 0, 0])
    own = {OWN_SPLIT_KEY: torch.tensor([[1]]), OWN_INDEX_KEY: torch.tensor([[4]])}
    stored = path_metadata("train", 2, 1)
    both = {**own, **stored, CAM_IDX_KEY: 0}
    assert choose_source(both, here, catalogue).rule == SourceRule.OWN_IMAGE
    assert (choose_source(both, here, catalogue).split, choose_source(both, here, catalogue).index) == ("test", 4)
    requested = choose_source({**stored, CAM_IDX_KEY: 0}, here, catalogue)
    assert (requested.rule, requested.index, requested.detail) == (SourceRule.REQUESTED, 0, "ns-render --camera-idx")
    viewer = choose_source({**stored}, here, catalogue, request=SourceRequest("test", 1, "viewer: Fixed image"))
    assert (viewer.rule, viewer.split, viewer.index) == (SourceRule.REQUESTED, "test", 1)
    path = choose_source(stored, here, catalogue)
    assert (path.rule, path.index) == (SourceRule.PATH_SOURCE, 2)
    nearest = choose_source({}, here, catalogue)
    assert (nearest.rule, nearest.index) == (SourceRule.NEAREST, 1), "image 0 is 9 m away, image 1 only 1 m"
    default = choose_source({}, here, catalogue, nearest=False, default_index=2)
    assert (default.rule, default.index) == (SourceRule.DEFAULT, 2)


def test_nearest_weighs_viewing_direction(catalogue):
    # At x = 0.9 looking +x: image 2 (0.1 m away) looks the other way; image 0 (0.9 m away) sees the same scene.
    assert catalogue.nearest(pose([0.9, 0, 0], [1, 0, 0])) == 0
    assert catalogue.nearest(pose([0.9, 0, 0], [-1, 0, 0])) == 2
    scores = catalogue.scores(pose([0.9, 0, 0], [1, 0, 0]))
    assert scores[2] == pytest.approx(0.1 + 2 * 10.0, abs=1e-4)  # 180 degrees cost twice the direction weight


def test_a_missing_source_fails_with_the_valid_range(catalogue):
    choice = choose_source({CAM_IDX_KEY: 7}, pose([0, 0, 0], [1, 0, 0]), catalogue)
    with pytest.raises(IndexError, match=r"train split has 3 images \(valid: 0..2\)"):
        check_index(choice, {"train": 3})


def test_choice_log_reports_each_change_once(catalogue):
    lines = []
    log = ChoiceLog("m", printer=lines.append)
    for position in ([0, 0, 0], [0.1, 0, 0], [9.5, 0, 0], [9.6, 0, 0]):
        log(choose_source({}, pose(position, [1, 0, 0]), catalogue), "name.png")
    assert len(lines) == 2 and "train image 0 (name.png), rule 'nearest training image'" in lines[0]


def test_camera_path_json_keeps_source_intrinsics_and_stored_source():
    c2w = pose([1, 2, 3], [0, 1, 0])
    payload = {
        "render_height": 96,
        "render_width": 320,
        "seconds": 1.0,
        "camera_type": "perspective",
        "bts_source": {"split": "train", "index": 5},
        "bts_intrinsics": {"fx": 150.0, "fy": 151.0, "cx": 160.5, "cy": 61.09},
        "camera_path": [{"camera_to_world": torch.cat([c2w, torch.tensor([[0, 0, 0, 1.0]])]).reshape(-1).tolist(),
                         "fov": 35.0, "aspect": 320 / 96}],
    }  # fmt: skip
    cameras = path_cameras_from_json(payload)
    assert (float(cameras.cx[0]), float(cameras.cy[0]), float(cameras.fy[0])) == pytest.approx((160.5, 61.09, 151.0))
    assert (int(cameras.width[0]), int(cameras.height[0])) == (320, 96)
    choice = choose_source(cameras[0:1].metadata, c2w, SourceCatalogue.from_camera_to_worlds(c2w[None]))
    assert (choice.rule, choice.index) == (SourceRule.PATH_SOURCE, 5)


def test_interpolated_path_keeps_the_dataset_image_size():
    poses = torch.stack([pose([0, 0, 0], [1, 0, 0]), pose([5, 0, 0], [1, 0, 0])])
    cameras = Cameras(camera_to_worlds=poses, fx=150.0, fy=150.0, cx=155.0, cy=61.0, width=320, height=96)
    path = interpolated_cameras(cameras, steps=3, order_poses=False)
    assert set(path.width.reshape(-1).tolist()) == {320} and set(path.height.reshape(-1).tolist()) == {96}


def test_level_spiral_starts_at_the_camera_without_roll():
    start = Cameras(
        camera_to_worlds=pose([3, 4, 1.5], [1, 0, -0.1])[None], fx=150.0, fy=150.0, cx=155.0, cy=61.0, width=320,
        height=96,
    )  # fmt: skip
    path = level_spiral(start, steps=16, radius=1.5, focus_distance=15.0)
    c2w = path.camera_to_worlds
    assert torch.allclose(c2w[0, :, 3], torch.tensor([3.0, 4.0, 1.5]), atol=1e-5)
    assert c2w[:, 2, 0].abs().max() < 1e-5, "the camera's x axis must stay horizontal (no roll)"
    offsets = (c2w[:, :, 3] - c2w[0, :, 3]).norm(dim=-1)
    assert 1.0 < offsets.max() <= 2 * 1.5 * math.sqrt(2) + 1e-4
    assert float(path.cy[0]) == 61.0 and int(path.height[0]) == 96


def test_camera_path_moves_level_unless_asked_to_follow_the_tilt():
    tilted = pose([0, 0, 1.6], [math.cos(math.radians(6)), 0, -math.sin(math.radians(6))])
    level = torch.stack(path_poses(tilted, forward_m=10.0, sideways_m=1.5, frames=5))
    assert torch.allclose(level[0, :3], tilted.double(), atol=1e-6), "frame 0 is the source pose"
    assert torch.allclose(level[:, 2, 3], torch.full((5,), 1.6, dtype=torch.float64), atol=1e-6)
    assert float(level[-1, 0, 3]) == pytest.approx(10.0, abs=1e-6)
    followed = torch.stack(path_poses(tilted, forward_m=10.0, sideways_m=1.5, frames=5, follow_tilt=True))
    assert float(followed[-1, 2, 3]) == pytest.approx(1.6 - 10 * math.sin(math.radians(6)), abs=1e-6)


def test_occupancy_behind_surface_counts_dense_samples_in_the_band():
    distances = torch.arange(1.0, 11.0)[None]  # samples at 1..10 m
    densities = torch.tensor([[0, 0, 5.0, 0, 5.0, 5.0, 0, 0, 5.0, 0]])
    weights = torch.tensor([[0, 0, 1.0, 0, 0, 0, 0, 0, 0, 0]])  # surface at 3 m
    share = occupancy_behind_surface(weights, densities, distances, band=4.0, threshold=0.5)
    assert share.shape == (1, 1) and float(share) == pytest.approx(2 / 4)  # 4..7 m: two of four dense


def test_training_only_warnings_wait_for_the_trainer():
    import warnings

    from bts_studio.methods.common import deferred_warnings

    store = []
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with deferred_warnings.collect(store):
            warnings.warn("no ImageNet weights; training the encoder from scratch", stacklevel=1)
        assert not shown and len(store) == 1, "the warning must wait (ns-viewer, ns-render and ns-eval never train)"
        deferred_warnings.emit(store)
    assert len(shown) == 1 and "from scratch" in str(shown[0].message) and not store
