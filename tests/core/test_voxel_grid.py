"""Tier 1: DeepVoxels' voxel-grid geometry (bts_studio.core.voxel_grid)."""

import math

import torch

from bts_studio.core.geometry import intrinsics_matrix, invert_pose, project_points
from bts_studio.core.voxel_grid import (
    collapse_depth,
    expected_depth,
    frustum_depths,
    frustum_points,
    lift_features,
    ray_distance_scale,
    sample_grid,
    visibility_weights,
    voxel_centres,
)
from bts_studio.data.synthetic.shapenet_views import orbit_poses

GRID = 8
VOXEL = 1.0 / GRID
BARYCENTRE = torch.tensor([0.1, -0.05, 0.2])


def camera(side: int, focal_ratio: float = 0.5, position=(1.0, 0.8, 1.1)):
    """A camera looking at the barycentre; returns K (pixels of a ``side`` map), c2w and w2c (OpenCV, 3x4)."""
    c2w = orbit_poses(torch.tensor([position], dtype=torch.float64) - 0.0)[0, :3].float()
    c2w[:, 3] += BARYCENTRE  # orbit_poses looks at the origin; shift camera and target together
    K = intrinsics_matrix(*(torch.tensor([v]) for v in (focal_ratio * side, focal_ratio * side, side / 2, side / 2)))
    return K, c2w[None], invert_pose(c2w)[None]


def test_voxel_centres_are_symmetric_about_the_barycentre_in_z_y_x_order():
    centres = voxel_centres(GRID, VOXEL, BARYCENTRE)
    assert centres.shape == (GRID, GRID, GRID, 3)
    assert torch.allclose(centres.mean(dim=(0, 1, 2)), BARYCENTRE, atol=1e-6)
    # x follows the last index, z the first (grid_sample's (D, H, W) order).
    assert torch.allclose(centres[0, 0, 1] - centres[0, 0, 0], torch.tensor([VOXEL, 0.0, 0.0]))
    assert torch.allclose(centres[1, 0, 0] - centres[0, 0, 0], torch.tensor([0.0, 0.0, VOXEL]))


def test_sample_grid_reads_voxel_values_at_centres_and_is_linear_between():
    centres = voxel_centres(GRID, VOXEL, BARYCENTRE)
    grid = centres.permute(3, 0, 1, 2)[None]  # features = the voxel centre's coordinates
    at_centres = sample_grid(grid, centres.reshape(1, -1, 3), BARYCENTRE, VOXEL)
    assert torch.allclose(at_centres[0].T, centres.reshape(-1, 3), atol=1e-5)
    inside = BARYCENTRE + (torch.rand(1, 50, 3) - 0.5) * VOXEL * (GRID - 1)
    assert torch.allclose(sample_grid(grid, inside, BARYCENTRE, VOXEL)[0].T, inside[0], atol=1e-5)


def test_lifting_reads_the_feature_where_each_voxel_projects():
    side = 16
    K, _, w2c = camera(side)
    rows, cols = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    feature_map = torch.stack([cols, rows])[None]  # the map stores each pixel centre's (u, v)
    centres = voxel_centres(GRID, VOXEL, BARYCENTRE)
    volume, valid = lift_features(feature_map, K, w2c, centres)
    uv, _ = project_points(centres.reshape(1, -1, 3), K, w2c)
    inner = ((uv > 0.5) & (uv < side - 0.5)).all(dim=-1)[0]  # bilinear interpolation is exact away from the border
    lifted = volume.reshape(2, -1).T
    assert valid.all() and inner.sum() > 100
    assert torch.allclose(lifted[inner], uv[0][inner], atol=1e-4)


def test_lifting_then_projecting_a_constant_feature_map_reproduces_the_constant_inside_the_frustum():
    side, constant = 16, 0.7
    K, c2w, w2c = camera(side)
    centres = voxel_centres(GRID, VOXEL, BARYCENTRE)
    volume, valid = lift_features(torch.full((1, 3, side, side), constant), K, w2c, centres)
    assert valid.all(), "the test camera must see the whole grid"
    assert torch.allclose(volume, torch.full_like(volume, constant))
    depths = frustum_depths(math.sqrt(3) / 2, VOXEL, 2 * GRID)
    points = frustum_points(K, c2w, depths, side, side)
    frustum = sample_grid(volume, points, BARYCENTRE, VOXEL)
    assert frustum.shape == (1, 3, 2 * GRID, side, side)
    offset = (points - BARYCENTRE).abs().amax(dim=-1)[0]  # [P, h, w]
    inside = offset < VOXEL * (GRID - 1) / 2 - 1e-4
    outside = offset > VOXEL * (GRID + 1) / 2 + 1e-4  # zero padding fades out over one voxel spacing
    assert inside.sum() > 100 and outside.sum() > 100
    assert torch.allclose(frustum[0][:, inside], torch.tensor(constant), atol=1e-5)
    assert (frustum[0][:, outside] == 0).all()


def test_frustum_points_project_back_to_pixel_centres_at_their_plane_depth():
    side = 8
    K, c2w, w2c = camera(side)
    depths = frustum_depths(1.0, 0.25, 4)
    points = frustum_points(K, c2w, depths, side, side)
    uv, z = project_points(points.reshape(1, -1, 3), K, w2c)
    rows, cols = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    expected_uv = torch.stack([cols, rows], dim=-1).reshape(1, -1, 2).repeat(1, 4, 1)
    assert torch.allclose(uv, expected_uv, atol=1e-4)
    assert torch.allclose(z, depths.repeat_interleave(side * side)[None], atol=1e-5)
    # ray distance = z * |K^-1 (u, v, 1)|
    distance = (points[0, 0] - c2w[0, :, 3]).norm(dim=-1)
    assert torch.allclose(distance, depths[0] * ray_distance_scale(K, side, side)[0], atol=1e-5)


def test_occlusion_weights_sum_to_one_along_each_ray_and_give_depth_and_features():
    scores = torch.randn(2, 1, 16, 5, 7, requires_grad=True)
    weights = visibility_weights(scores)
    assert (weights > 0).all()
    assert torch.allclose(weights.sum(dim=2), torch.ones(2, 1, 5, 7), atol=1e-6)
    depths = frustum_depths(0.5, 0.1, 16)
    one_hot = torch.zeros(1, 1, 16, 2, 2)
    one_hot[:, :, 3] = 1.0
    assert torch.allclose(expected_depth(one_hot, depths), torch.full((1, 1, 2, 2), 0.8))
    features = torch.randn(1, 4, 16, 2, 2)
    assert torch.allclose(collapse_depth(features, one_hot), features[:, :, 3] / 16)
    expected_depth(weights, depths).sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
