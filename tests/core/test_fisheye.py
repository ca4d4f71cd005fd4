"""MEI fisheye model: agreement with the formula of the official devkit, round trips, domain, gradients."""

import math

import numpy as np
import pytest
import torch

from bts_studio.core.fisheye import MeiParams, mei_max_angle, mei_project, mei_unproject, mei_unproject_with_valid


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Many small float64 ops: on a busy 2-core machine extra threads only spin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Roughly KITTI-360's image_02 (xi > 1: the projection folds back beyond ~117 degrees).
KITTI_LIKE = MeiParams(
    xi=2.21,
    k1=0.017,
    k2=1.65,
    p1=4e-4,
    p2=-3e-4,
    gamma1=1336.0,
    gamma2=1335.5,
    u0=717.5,
    v0=706.3,
    width=1400,
    height=1400,
)


def _reference_projection(points: np.ndarray, p: MeiParams) -> np.ndarray:
    """The MEI model written out directly (unit sphere, shift by xi, radial + tangential distortion)."""
    x, y, z = (points / np.linalg.norm(points, axis=-1, keepdims=True)).T
    mx, my = x / (z + p.xi), y / (z + p.xi)
    r2 = mx**2 + my**2
    radial = 1 + p.k1 * r2 + p.k2 * r2**2
    xd = mx * radial + 2 * p.p1 * mx * my + p.p2 * (r2 + 2 * mx**2)
    yd = my * radial + p.p1 * (r2 + 2 * my**2) + 2 * p.p2 * mx * my
    return np.stack([p.gamma1 * xd + p.u0, p.gamma2 * yd + p.v0], axis=-1)


def test_projection_matches_the_model_formula():
    points = np.random.default_rng(0).normal(size=(500, 3)) + [0.0, 0.0, 1.0]
    uv, valid = mei_project(torch.tensor(points), KITTI_LIKE)
    in_domain = points[:, 2] / np.linalg.norm(points, axis=-1) > -1 / KITTI_LIKE.xi
    assert in_domain.mean() > 0.8 and not in_domain.all()
    np.testing.assert_allclose(
        uv.numpy()[in_domain], _reference_projection(points, KITTI_LIKE)[in_domain], rtol=1e-12, atol=1e-9
    )
    assert not valid[torch.from_numpy(~in_domain)].any()


@pytest.mark.parametrize("xi", [0.0, 0.6, 2.21])
def test_unproject_inverts_project_over_the_image(xi):
    params = MeiParams(
        xi=xi,
        k1=0.02,
        k2=0.3 if xi < 1 else 1.65,
        p1=4e-4,
        p2=-3e-4,
        gamma1=400.0 * (1 + xi),
        gamma2=401.0 * (1 + xi),
        u0=320.5,
        v0=240.5,
        width=640,
        height=480,
    )
    rows, cols = torch.meshgrid(torch.arange(0.0, 480.0, 3.0), torch.arange(0.0, 640.0, 3.0), indexing="ij")
    uv = torch.stack([cols + 0.5, rows + 0.5], dim=-1).double()
    rays, valid = mei_unproject_with_valid(uv, params)
    assert valid.float().mean() > 0.5
    torch.testing.assert_close(rays[valid].norm(dim=-1), torch.ones(int(valid.sum()), dtype=torch.float64))
    assert (rays[~valid] == 0).all()
    back, projectable = mei_project(rays[valid] * 7.3, params)
    assert projectable.all()
    assert (back - uv[valid]).abs().max() < 1e-6


def test_principal_point_looks_along_the_optical_axis_and_opencv_units_shift():
    calibration = type(
        "Calibration",
        (),
        dict(
            xi=2.0, k1=0.1, k2=0.2, p1=0.0, p2=0.0, gamma1=500.0, gamma2=500.0, u0=99.0, v0=49.0, width=200, height=100
        ),
    )()
    params = MeiParams.from_opencv(calibration)
    assert (params.u0, params.v0) == (99.5, 49.5) and params.opencv_principal_point() == (99.0, 49.0)
    ray = mei_unproject(torch.tensor([[99.5, 49.5]], dtype=torch.float64), params)
    torch.testing.assert_close(ray, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))
    half = params.resized(100, 50)
    assert (half.u0, half.gamma1, half.width) == (49.75, 250.0, 100)


def test_domain_excludes_folded_back_rays():
    limit = mei_max_angle(KITTI_LIKE)
    assert math.degrees(limit) == pytest.approx(math.degrees(math.acos(-1 / 2.21)))
    inside = torch.tensor([[math.sin(limit - 0.01), 0.0, math.cos(limit - 0.01)]], dtype=torch.float64)
    beyond = torch.tensor([[math.sin(limit + 0.01), 0.0, math.cos(limit + 0.01)]], dtype=torch.float64)
    small = KITTI_LIKE.resized(1400, 1400)
    wide = MeiParams(**{**small.__dict__, "width": 100000, "height": 100000, "u0": 50000.0, "v0": 50000.0})
    assert mei_project(inside, wide)[1].item() and not mei_project(beyond, wide)[1].item()
    assert not mei_project(torch.zeros(1, 3, dtype=torch.float64), wide)[1].item()


def test_projection_is_differentiable():
    points = (torch.randn(8, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, 3.0])).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: mei_project(p, KITTI_LIKE)[0], (points,))
    uv = mei_project(points.detach(), KITTI_LIKE)[0].requires_grad_()
    assert torch.autograd.gradcheck(lambda q: mei_unproject(q, KITTI_LIKE), (uv,))
