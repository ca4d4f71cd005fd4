"""Tier 1: trilinear interpolation of a corner grid (bts_studio.core.trilinear)."""

import pytest
import torch
import torch.nn.functional as F

from bts_studio.core.mise import grid_points
from bts_studio.core.trilinear import trilinear_interpolate


def grid_sample_reference(values: torch.Tensor, points: torch.Tensor, half_extent: float) -> torch.Tensor:
    """``grid_sample`` reads ``(z, y, x)`` volumes and ``(x, y, z)`` coordinates in ``[-1, 1]``."""
    coordinates = (points / half_extent).reshape(1, -1, 1, 1, 3)
    volume = values.permute(2, 1, 0)[None, None]
    sampled = F.grid_sample(volume, coordinates, mode="bilinear", align_corners=True, padding_mode="border")
    return sampled.reshape(points.shape[:-1])


@pytest.mark.parametrize("shape", [(5, 5, 5), (2, 3, 7)])
def test_values_equal_grid_sample_inside_and_outside_the_cube(shape):
    half_extent = 0.5
    values = torch.rand(shape)
    # 1.4 x the cube: a fifth of the points lie outside, where border padding clamps them to the nearest face.
    points = (torch.rand(2000, 3) - 0.5) * 2 * half_extent * 1.4
    expected = grid_sample_reference(values, points, half_extent)
    assert torch.allclose(trilinear_interpolate(values, points, half_extent), expected, atol=1e-6, rtol=0)


def test_grid_points_read_their_own_values_and_batch_shape_is_kept():
    values = torch.rand(5, 5, 5)
    corners = grid_points(4, 0.5)  # [5, 5, 5, 3], the grid the values belong to (faces included)
    assert torch.allclose(trilinear_interpolate(values, corners, 0.5), values, atol=1e-6, rtol=0)


def test_first_derivatives_equal_grid_samples():
    values = torch.rand(6, 6, 6, dtype=torch.float64, requires_grad=True)
    points = ((torch.rand(300, 3, dtype=torch.float64) - 0.5) * 1.2).requires_grad_(True)
    ours = torch.autograd.grad(trilinear_interpolate(values, points, 0.5).square().sum(), (values, points))
    reference = torch.autograd.grad(grid_sample_reference(values, points, 0.5).square().sum(), (values, points))
    for mine, theirs in zip(ours, reference, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-10, rtol=0)


def test_twice_differentiable_in_points_and_values():
    """What DVR's refinement needs: gradgradcheck passes in float64 (points away from cell faces, where trilinear
    interpolation has kinks, so the finite differences see one smooth piece)."""
    values = torch.rand(4, 4, 4, dtype=torch.float64, requires_grad=True)
    cells = torch.randint(0, 3, (6, 3)).double()
    points = ((cells + 0.2 + 0.6 * torch.rand(6, 3, dtype=torch.float64)) / 3 - 0.5).requires_grad_(True)

    def function(values, points):
        return trilinear_interpolate(values, points, 0.5)

    assert torch.autograd.gradcheck(function, (values, points))
    assert torch.autograd.gradgradcheck(function, (values, points))


def test_the_normal_of_a_linear_field_is_exact():
    """Trilinear interpolation reproduces a linear field, so its gradient is the field's (used as normals)."""
    direction = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    corners = grid_points(3, 0.5, dtype=torch.float64)
    values = corners @ direction  # [4, 4, 4]
    points = ((torch.rand(50, 3, dtype=torch.float64) - 0.5) * 0.9).requires_grad_(True)
    (gradient,) = torch.autograd.grad(trilinear_interpolate(values, points, 0.5).sum(), points, create_graph=True)
    assert torch.allclose(gradient, direction.expand(50, 3), atol=1e-12)
    (second,) = torch.autograd.grad(gradient.square().sum(), points)  # a double backward that runs
    assert torch.allclose(second, torch.zeros_like(second), atol=1e-12)


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(ValueError, match=r">= 2 points per axis"):
        trilinear_interpolate(torch.rand(1, 4, 4), torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match=r"half_extent must be > 0"):
        trilinear_interpolate(torch.rand(4, 4, 4), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match=r"must match"):
        trilinear_interpolate(torch.rand(4, 4, 4), torch.zeros(2, 3, dtype=torch.float64), 0.5)
