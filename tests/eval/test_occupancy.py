"""Occupancy maths of the BTS lidar protocol, on inputs built by hand."""

import math

import pytest
import torch

from bts_studio.eval.occupancy import (
    box_grid,
    depth_band_occupancy,
    lidar_reference_occupancy,
    mean_metrics,
    occupancy_metrics,
    occupied_by_scan,
    official_max_range,
    official_query_points,
    outside_frustum,
    polar_surface_profile,
    profile_point_mask,
    sample_depth_nearest,
    tilt_rotation,
    tilted_to_camera,
    visible_before_depth,
)

# velodyne (x forward, y left, z up) -> tilted frame (x right, y down, z forward), velodyne at the camera centre.
VELO_TO_TILTED = torch.tensor(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def ring(radius: float, height_velo: float = -0.5, count: int = 3600) -> torch.Tensor:
    """Lidar returns on a horizontal circle around the velodyne, at bin-interior angles."""
    angles = -math.pi + (torch.arange(count, dtype=torch.float64) + 0.5) * (2 * math.pi / count)
    return torch.stack(
        [radius * torch.cos(angles), radius * torch.sin(angles), torch.full_like(angles, height_velo)], -1
    ).float()


def at_degrees(degrees: float, distance: float, z: float = 0.0) -> list:
    radians = math.radians(degrees)
    return [distance * math.cos(radians), distance * math.sin(radians), z]


def test_tilt_rotation_matches_bts_constant_and_looks_down():
    rotation = tilt_rotation()
    official = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.9961947, 0.0871557], [0.0, -0.0871557, 0.9961947]])
    assert torch.allclose(rotation, official, atol=1e-7)
    assert torch.allclose(rotation @ rotation.T, torch.eye(3), atol=1e-6)
    optical_axis_tilted = rotation @ torch.tensor([0.0, 0.0, 1.0])
    assert optical_axis_tilted[1] > 0  # a camera pitched down sees its axis below the horizon (y down)
    points = torch.randn(5, 3)
    assert torch.allclose(tilted_to_camera(points @ rotation.T), points, atol=1e-6)


def test_official_query_points_layout():
    points = official_query_points()
    assert points.shape == (1, 160, 80, 3)
    assert torch.all(points[..., 1] == 0.375)
    assert points[0, 0, 0].tolist() == [-4.0, 0.375, 20.0]
    assert points[0, -1, -1].tolist() == [4.0, 0.375, 4.0]
    assert torch.allclose(points[0, 0, 1, 0] - points[0, 0, 0, 0], torch.tensor(8.0 / 79))
    assert official_max_range() == pytest.approx(math.sqrt(416.0))
    assert box_grid(torch.zeros(2), torch.zeros(3), torch.zeros(4)).shape == (3, 4, 2, 3)


def test_profile_takes_bin_minimum_and_inherits_previous_bin():
    points = torch.tensor(
        [
            at_degrees(-179.5, 5.0)[:2],
            at_degrees(-179.3, 7.0)[:2],
            at_degrees(0.2, 3.0)[:2],
            at_degrees(0.7, 2.0)[:2],
            at_degrees(90.5, 9.0)[:2],
        ]
    )
    profile = polar_surface_profile(points)
    assert profile.shape == (362, 2)
    ranges = profile[1:-1, 1]
    assert torch.allclose(ranges[:180], torch.tensor(5.0))  # bin 0 holds 5 and 7; bins 1..179 inherit 5
    assert torch.allclose(ranges[180:270], torch.tensor(2.0))
    assert torch.allclose(ranges[270:], torch.tensor(9.0))
    centres = torch.rad2deg(profile[1:-1, 0].double())
    assert torch.allclose(centres[[0, 180, 359]], torch.tensor([-179.5, 0.5, 179.5], dtype=torch.float64), atol=1e-4)
    # wrap-around rows: last bin before -180 deg, first bin after +180 deg
    assert math.degrees(profile[0, 0]) == pytest.approx(-180.5, abs=1e-4) and profile[0, 1] == pytest.approx(9.0)
    assert math.degrees(profile[-1, 0]) == pytest.approx(180.5, abs=1e-4) and profile[-1, 1] == pytest.approx(5.0)


def test_profile_leading_empty_bins_take_smallest_angle_return():
    points = torch.tensor([at_degrees(-169.9, 8.0)[:2], at_degrees(-169.2, 4.0)[:2]])
    ranges = polar_surface_profile(points)[1:-1, 1]
    assert torch.allclose(ranges[:10], torch.tensor(8.0))  # BTS starts from the first sorted return, not the min
    assert torch.allclose(ranges[10:], torch.tensor(4.0))


def _naive_profile(points_xy: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Straightforward loop over bins in float64, as the protocol describes it."""
    angles = torch.atan2(points_xy[:, 1], points_xy[:, 0]).double()
    ranges = points_xy.double().norm(dim=-1)
    order = torch.argsort(angles)
    angles, ranges = angles[order], ranges[order]
    current = ranges[0].item()
    rows = []
    for index in range(num_bins):
        low = -math.pi + 2 * math.pi * index / num_bins
        high = -math.pi + 2 * math.pi * (index + 1) / num_bins
        inside = (angles >= low) & (angles < high)
        if inside.any():
            current = ranges[inside].min().item()
        rows.append([(low + high) / 2, current])
    rows = [[rows[-1][0] - 2 * math.pi, rows[-1][1]]] + rows + [[rows[0][0] + 2 * math.pi, rows[0][1]]]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("count", [7, 400, 5000])
def test_profile_matches_naive_loop_on_random_scans(count):
    generator = torch.Generator().manual_seed(count)
    points = (torch.rand(count, 2, generator=generator) - 0.5) * 60
    assert torch.allclose(polar_surface_profile(points, 360).double(), _naive_profile(points, 360), atol=1e-4)


def test_profile_of_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="no returns"):
        polar_surface_profile(torch.zeros(0, 2))


def test_scan_vote_uses_homogeneous_norm_and_min_range():
    profile = polar_surface_profile(ring(10.0)[:, :2])
    assert torch.allclose(profile[:, 1], torch.tensor(10.0), atol=1e-4)
    queries = torch.tensor(
        [
            [9.9, 0.0, 0.0],  # sqrt(98.01 + 1) = 9.95 < 10: free
            [9.96, 0.0, 0.0],  # sqrt(99.20 + 1) = 10.01 > 10: occupied although in front of the surface (quirk)
            [0.0, 9.0, -4.5],  # sqrt(81 + 20.25 + 1) = 10.11: the height counts too
            [2.5, 0.0, 0.0],  # sqrt(7.25) = 2.69 < 3: occupied by the minimum range
            [2.9, 0.0, 0.0],  # sqrt(9.41) = 3.07: free
            [-15.0, 0.0, 0.0],  # behind the ring
        ]
    )
    assert occupied_by_scan(queries, profile).tolist() == [False, True, True, True, False, True]


def test_scan_vote_interpolates_between_bin_centres():
    near = [at_degrees(-90.0 + 0.3 + index, 10.0)[:2] for index in range(90)]  # bins 90..179 -> 10 m
    far = [at_degrees(0.3 + index, 20.0)[:2] for index in range(90)]  # bins 180..269 -> 20 m
    profile = polar_surface_profile(torch.tensor(near + far))
    # angle 0 lies halfway between the centres of bins 179 (-0.5 deg, 10 m) and 180 (+0.5 deg, 20 m): 15 m
    queries = torch.tensor([[14.9, 0.0, 0.0], [14.99, 0.0, 0.0]])  # ranges 14.93 and 15.02
    assert occupied_by_scan(queries, profile).tolist() == [False, True]


def scans_and_transforms(radii):
    scans = [ring(radius) for radius in radii]
    return scans, VELO_TO_TILTED.expand(len(radii), 4, 4).clone()


def test_reference_needs_18_of_20_votes_and_current_scan_decides_visibility():
    query = torch.tensor([[0.0, 0.375, 15.0], [0.0, 0.375, 5.0]])  # 15 m and 5 m straight ahead
    scans, transforms = scans_and_transforms([10.0] * 18 + [30.0] * 2)
    occupied, visible = lidar_reference_occupancy(query, scans, transforms)
    assert occupied.tolist() == [True, False] and visible.tolist() == [False, True]

    scans, transforms = scans_and_transforms([30.0] + [10.0] * 17 + [30.0] * 2)
    occupied, visible = lidar_reference_occupancy(query, scans, transforms)
    assert occupied.tolist() == [False, False]  # 17 votes: (1 + 17) / 20 is not > 18 / 20
    assert visible.tolist() == [True, True]  # the current scan (30 m ring) sees 15 m as free


def test_reference_with_one_scan_calls_everything_occupied():
    # At a sequence's end BTS may have a single scan: (1 + votes) / 1 > -1 always holds.
    scans, transforms = scans_and_transforms([30.0])
    occupied, visible = lidar_reference_occupancy(torch.tensor([[0.0, 0.375, 5.0]]), scans, transforms)
    assert occupied.tolist() == [True] and visible.tolist() == [True]


def test_reference_ignores_returns_outside_the_height_slice():
    # A ring 10 m away but 1 m above the camera (tilted y = -1) is not part of the profile; the far ring is.
    scans = [torch.cat([ring(10.0, height_velo=1.0), ring(25.0, height_velo=3.0)])] * 3
    transforms = VELO_TO_TILTED.expand(3, 4, 4).clone()
    mask = profile_point_mask(scans[0] @ VELO_TO_TILTED[:3, :3].T, (0.0, 0.75), official_max_range())
    assert mask.sum() == 3600
    occupied, _ = lidar_reference_occupancy(torch.tensor([[0.0, 0.375, 15.0]]), scans, transforms)
    assert occupied.tolist() == [False]


def test_reference_honours_the_velodyne_pose():
    # The same 10 m ring seen from a velodyne 8 m further forward: the surface is 18 m ahead of the camera.
    shifted = VELO_TO_TILTED.clone()
    shifted[2, 3] = 8.0
    scans = [ring(10.0)] * 20
    occupied, _ = lidar_reference_occupancy(
        torch.tensor([[0.0, 0.375, 15.0], [0.0, 0.375, 18.5]]), scans, shifted.expand(20, 4, 4).clone()
    )
    assert occupied.tolist() == [False, True]


K_SMALL = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 1.5], [0.0, 0.0, 1.0]])  # a 4 x 3 image
DEPTH_SMALL = torch.arange(12, dtype=torch.float32).reshape(3, 4) + 1.0


def test_depth_sampling_is_nearest_pixel_with_border_clamp():
    points = torch.tensor(
        [
            [0.0, 0.0, 1.0],  # (u, v) = (2, 1.5) -> pixel row 1, column 2 -> depth 7
            [-0.9, -0.7, 1.0],  # (0.2, 0.1) -> row 0, column 0 -> 1
            [0.9, 0.7, 1.0],  # (3.8, 2.9) -> row 2, column 3 -> 12
            [50.0, 50.0, 1.0],  # far outside: border pixel row 2, column 3 -> 12
            [-50.0, 0.0, 1.0],  # row 1, column 0 -> 5
        ]
    )
    sampled, z = sample_depth_nearest(points, K_SMALL, DEPTH_SMALL)
    assert sampled.tolist() == [7.0, 1.0, 12.0, 12.0, 5.0]
    assert z.tolist() == [1.0] * 5
    assert visible_before_depth(points * 7.0, K_SMALL, DEPTH_SMALL).tolist() == [True, False, True, True, False]


def test_depth_band_occupancy():
    depth = torch.full((3, 4), 10.0)
    points = torch.tensor([[0.0, 0.0, z] for z in (9.0, 10.0, 12.0, 14.0, 14.5)])
    assert depth_band_occupancy(points, K_SMALL, depth).tolist() == [False, False, True, True, False]


def test_outside_frustum():
    points = torch.tensor([[0.0, 0.0, 1.0], [1.1, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, -0.76, 1.0], [-1.0, 0.75, 1.0]])
    assert outside_frustum(points, K_SMALL, 4, 3).tolist() == [False, True, True, True, False]


def test_metrics_by_hand():
    pred = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    gt = torch.tensor([1, 0, 1, 0, 1, 0, 0, 1], dtype=torch.bool)
    visible = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)  # the last point: gt forced empty
    metrics = occupancy_metrics(pred, gt, visible)
    # effective gt: 1 0 1 0 1 0 0 0; correct: 1 0 0 1 1 1 1 1 -> 6/8
    assert metrics["o_acc"] == pytest.approx(6 / 8)
    assert metrics["o_prec"] == pytest.approx(2 / 3)  # predicted occupied: 0, 1, 4 -> gt 1, 0, 1
    assert metrics["o_rec"] == pytest.approx(2 / 3)  # gt occupied: 0, 2, 4 -> pred 1, 0, 1
    assert metrics["ie_acc"] == pytest.approx(4 / 6)  # invisible 0..5: correct 1 0 0 1 1 1
    assert metrics["ie_prec"] == pytest.approx(2 / 3)  # invisible, predicted empty: 2, 3, 5 -> gt empty 3, 5
    assert metrics["ie_rec"] == pytest.approx(2 / 3)  # invisible gt empty: 1, 3, 5 -> predicted empty 3, 5
    assert metrics["ie_r"] == pytest.approx(3 / 8)
    assert metrics["t_ie"] == 3 and metrics["t_no_nop_nv"] == 2


def test_metrics_undefined_ratios_are_nan_and_skipped_in_the_mean():
    nothing = torch.zeros(4, dtype=torch.bool)
    first = occupancy_metrics(nothing, nothing, nothing)
    assert first["o_acc"] == 1.0 and math.isnan(first["o_prec"]) and math.isnan(first["o_rec"])
    second = occupancy_metrics(torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool), nothing)
    summary = mean_metrics([first, second])
    assert summary["n_frames"] == 2 and summary["o_acc"] == 1.0
    assert summary["o_prec"] == 1.0 and summary["n_o_prec"] == 1
    assert summary["ie_rec"] == 1.0 and summary["n_ie_rec"] == 1
