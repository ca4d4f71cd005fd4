"""Tier 1: projecting points into views and reading features/colours there (BTS conventions)."""

import torch

from bts_studio.core.feature_sampling import (
    inverse_depth_code,
    outside_frustum,
    project_to_views,
    sample_maps,
    sample_view_colours,
)

H, W = 12, 16


def _view(dtype=torch.float64):
    K = torch.tensor([[10.0, 0, 8.0], [0, 10.0, 6.0], [0, 0, 1]], dtype=dtype)
    w2c = torch.eye(4, dtype=dtype)[:3]
    return K[None, None], w2c[None, None]


def _ramp(dtype=torch.float64):
    """Channel 0 = u, channel 1 = v at every pixel centre (nerfstudio pixel (i, j) centre is (j+0.5, i+0.5))."""
    v, u = torch.meshgrid(torch.arange(H, dtype=dtype) + 0.5, torch.arange(W, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack([u, v])[None, None]


def test_a_point_reads_the_map_at_its_continuous_pixel():
    K, w2c = _view()
    points = torch.tensor([[[0.0, 0.0, 5.0], [0.5, -0.2, 2.0]]], dtype=torch.float64)
    xy, z = project_to_views(points, K, w2c, H, W)
    assert xy.shape == (1, 1, 2, 2) and z.shape == (1, 1, 2)
    assert torch.allclose(xy[0, 0, 0], torch.zeros(2, dtype=torch.float64))
    sampled = sample_maps(_ramp(), xy)
    expected_uv = torch.tensor([[8.0, 6.0], [8.0 + 10 * 0.25, 6.0 - 10 * 0.1]], dtype=torch.float64)
    assert torch.allclose(sampled[0, 0], expected_uv, atol=1e-9)


def test_frustum_validity_and_border_padding():
    K, w2c = _view()
    points = torch.tensor(
        [[[0.0, 0.0, 5.0], [0.0, 0.0, -5.0], [100.0, 0.0, 5.0], [0.0, 0.0, 1e-4]]], dtype=torch.float64
    )
    xy, z = project_to_views(points, K, w2c, H, W)
    assert outside_frustum(xy, z)[0, 0].tolist() == [False, True, True, True]
    colours, invalid = sample_view_colours(
        _ramp().expand(1, 1, 2, H, W).repeat(1, 1, 1, 1, 1)[:, :, [0, 1, 1]], points, K, w2c
    )
    assert colours.shape == (1, 4, 1, 3) and invalid.shape == (1, 4, 1)
    assert float(colours[0, 2, 0, 0]) == W - 0.5  # far right: border value, flagged invalid


def test_inverse_depth_code_endpoints():
    z = torch.tensor([3.0, 80.0, 1e-5])
    code = inverse_depth_code(z, 3.0, 80.0)
    assert torch.allclose(code[:2], torch.tensor([1.0, -1.0]))
    assert torch.isfinite(code).all()


def test_two_views_and_gradients_float64():
    K, w2c = _view()
    K2 = torch.cat([K, K], dim=1)
    w2c2 = torch.cat([w2c, w2c.clone()], dim=1)
    w2c2[0, 1, 0, 3] = -0.3  # a camera 0.3 m to the right (points avoid pixel centres: bilinear kinks)
    images = torch.rand(1, 2, 3, H, W, dtype=torch.float64, requires_grad=True)
    points = (
        torch.tensor([[[0.13, 0.07, 4.1], [-0.21, 0.11, 6.3], [0.33, -0.12, 3.7]]], dtype=torch.float64)
    ).requires_grad_()

    def colours(p, im):
        return sample_view_colours(im, p, K2, w2c2)[0]

    assert colours(points, images).shape == (1, 3, 2, 3)
    assert torch.autograd.gradcheck(colours, (points, images))
