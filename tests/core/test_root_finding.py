"""Tier 1: DVR's surface search and analytic depth gradient on a sphere of learnable radius (float64)."""

import torch

from bts_studio.core.root_finding import (
    first_crossing,
    proposal_depths,
    ray_box_interval,
    surface_depth,
    surface_depth_unrolled,
)

SHARPNESS = 8.0  # logits per unit of distance to the sphere


def sphere_field(radius):
    """Occupancy logits of a sphere of ``radius`` around the per-ray centre given as the latent code."""

    def field(points, centre):
        return SHARPNESS * (radius - (points - centre[:, None]).norm(dim=-1))

    return field


def rays(count: int = 6):
    generator = torch.Generator().manual_seed(3)
    origins = torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64) + 0.05 * torch.randn(
        count, 3, generator=generator, dtype=torch.float64
    )
    directions = torch.tensor([0.0, 0.0, 1.3], dtype=torch.float64) + 0.04 * torch.randn(
        count, 3, generator=generator, dtype=torch.float64
    )
    centres = 0.03 * torch.randn(count, 3, generator=generator, dtype=torch.float64)
    return origins, directions, centres


def exact_depth(radius, origins, directions, centres):
    """Smaller root of |o + d w - c| = r, differentiable in closed form."""
    offset = origins - centres
    a = (directions * directions).sum(-1)
    b = 2 * (offset * directions).sum(-1)
    c = (offset * offset).sum(-1) - radius**2
    return (-b - (b * b - 4 * a * c).sqrt()) / (2 * a)


def search(function, radius, origins, directions, centres, samples=16, steps=8):
    field = sphere_field(radius)
    with torch.no_grad():
        d_near, d_far, meets = ray_box_interval(origins, directions, 0.55)
        assert bool(meets.all())
        depths = proposal_depths(d_near, d_far, samples)
        values = field(origins[:, None] + depths[..., None] * directions[:, None], centres)
        bracket = first_crossing(values, depths)
    assert bool(bracket.hit.all())
    return function(field, origins, directions, centres, bracket, steps, params=(radius,))


def test_secant_finds_the_sphere_surface():
    origins, directions, centres = rays(32)
    radius = torch.tensor(0.3, dtype=torch.float64)
    depth = search(surface_depth, radius, origins, directions, centres)
    assert (depth - exact_depth(radius, origins, directions, centres)).abs().max() < 1e-4


def test_first_crossing_rules():
    depths = torch.linspace(0, 1, 5).expand(3, 5)
    values = torch.tensor(
        [
            [-1.0, -0.5, 0.5, -0.5, 1.0],  # first crossing free->occupied between samples 1 and 2
            [1.0, -1.0, 1.0, 1.0, 1.0],  # starts occupied: no hit
            [-1.0, -1.0, -1.0, -1.0, -1.0],  # never occupied
        ]
    )
    bracket = first_crossing(values, depths)
    assert bracket.hit.tolist() == [True, False, False]
    assert bracket.first_occupied.tolist() == [False, True, False]
    assert bracket.d_low[0] == depths[0, 1] and bracket.d_high[0] == depths[0, 2]


def test_analytic_gradient_matches_finite_differences_closed_form_and_twin():
    origins, directions, centres = rays()
    radius = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    inputs = (radius, origins.requires_grad_(), directions.requires_grad_(), centres.requires_grad_())

    def analytic(r, o, w, c):
        return search(surface_depth, r, o, w, c, steps=30)

    assert torch.autograd.gradcheck(analytic, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)

    weights = torch.linspace(0.5, 1.5, origins.shape[0], dtype=torch.float64)
    grads = {}
    for name, function in (
        ("analytic", analytic),
        ("twin", lambda *args: search(surface_depth_unrolled, *args, steps=30)),
        ("exact", exact_depth),
    ):
        value = (function(*inputs) * weights).sum()
        grads[name] = torch.autograd.grad(value, inputs)
    for name in ("twin", "exact"):
        for mine, other in zip(grads["analytic"], grads[name], strict=True):
            torch.testing.assert_close(mine, other, atol=1e-8, rtol=1e-6)


def test_twin_with_dvr_settings_is_close_to_analytic():
    """With DVR's 16 proposals and 8 secant steps the unrolled chain has converged too."""
    origins, directions, centres = rays()
    radius = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    analytic = torch.autograd.grad(search(surface_depth, radius, origins, directions, centres).sum(), radius)[0]
    twin = torch.autograd.grad(search(surface_depth_unrolled, radius, origins, directions, centres).sum(), radius)[0]
    torch.testing.assert_close(analytic, twin, atol=1e-6, rtol=1e-6)
