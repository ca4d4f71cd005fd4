"""BTS's bird's-eye "profile": grid layout and the cumulative-density rule, by hand."""

import math

import torch

from bts_studio.eval.bev import bev_profile, bev_query_points


def test_bev_grid_layout_and_tilt():
    points = bev_query_points((-15.0, 15.0), (30.0, 5.0), (0.0, 1.0), (7, 6, 5))
    assert points.shape == (5, 6, 7, 3)
    c, s = math.cos(math.radians(5)), math.sin(math.radians(5))
    # top level, far row, leftmost column: tilted (-15, 0, 30) -> camera (x, c*y - s*z, s*y + c*z)
    assert torch.allclose(points[0, 0, 0], torch.tensor([-15.0, -s * 30.0, c * 30.0]), atol=1e-5)
    # bottom level, near row, rightmost column: tilted (15, 1, 5)
    assert torch.allclose(points[-1, -1, -1], torch.tensor([15.0, c - s * 5.0, s + c * 5.0]), atol=1e-5)
    untilted = bev_query_points((-1.0, 1.0), (3.0, 2.0), (0.0, 0.5), (2, 2, 2), tilt_deg=0.0)
    assert untilted[1, 0, 1].tolist() == [1.0, 0.5, 3.0]


def test_profile_counts_levels_up_to_the_threshold():
    density = torch.zeros(4, 1, 4)
    density[:, 0, 0] = 3.0  # running sums 3, 6, 9, 12 -> 2 of 4 levels <= 8
    density[0, 0, 2] = 100.0  # blocked at the top
    density[3, 0, 3] = 100.0  # blocked only at the last level
    assert bev_profile(density).tolist() == [[0.5, 1.0, 0.0, 0.75]]


def test_out_of_frustum_points_count_as_density_one():
    density = torch.zeros(16, 1, 2)
    density[:, 0, 1] = 0.5
    invalid = torch.zeros(16, 1, 2, dtype=torch.bool)
    invalid[:, 0, 0] = True  # 1 per level: sums 1..16, the first 8 are <= 8
    assert bev_profile(density, invalid).tolist() == [[0.5, 1.0]]  # 0.5 per level: 8 only at level 16
    assert bev_profile(density, invalid, threshold=4.0).tolist() == [[0.25, 0.5]]
