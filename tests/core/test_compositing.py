"""Tier 1: BTS volume compositing (point samples, forced termination)."""

import torch

from bts_studio.core.compositing import (
    LAST_DELTA,
    alphas_to_weights,
    composite_values,
    composite_weights,
    densities_to_alphas,
    expected_distance,
    invalid_mass,
    sample_deltas,
)


def _official_weights(sigma: torch.Tensor, t: torch.Tensor, hard_alpha_cap: bool) -> torch.Tensor:
    """Straight transcription of the maths of PixelNeRF/BTS ``NeRFRenderer.composite``."""
    deltas = torch.cat([t[:, 1:] - t[:, :-1], 1e10 * torch.ones_like(t[:, :1])], -1)
    alphas = 1 - torch.exp(-deltas.abs() * torch.relu(sigma))
    if hard_alpha_cap:
        alphas = alphas.clone()
        alphas[:, -1] = 1
    shifted = torch.cat([torch.ones_like(alphas[:, :1]), 1 - alphas + 1e-10], -1)
    return alphas * torch.cumprod(shifted, -1)[:, :-1]


def test_weights_match_the_official_renderer():
    t = torch.sort(torch.rand(6, 10, dtype=torch.float64) * 77 + 3, dim=-1).values
    sigma = torch.rand(6, 10, dtype=torch.float64) * 2
    for cap in (True, False):
        assert torch.allclose(composite_weights(sigma, t, terminate_last=cap), _official_weights(sigma, t, cap))


def test_forced_termination_makes_weights_sum_to_one():
    t = torch.linspace(3, 80, 64).expand(5, 64)
    weights = composite_weights(torch.zeros(5, 64), t, terminate_last=True)
    assert torch.allclose(weights.sum(-1), torch.ones(5), atol=1e-6)
    assert torch.allclose(expected_distance(weights, t), torch.full((5, 1), 80.0))  # empty space -> far plane


def test_shapes_and_last_delta():
    t = torch.rand(2, 3, 7)
    assert sample_deltas(t).shape == (2, 3, 7) and float(sample_deltas(t)[0, 0, -1]) == LAST_DELTA
    weights = torch.rand(2, 3, 7)
    assert composite_values(weights, torch.rand(2, 3, 7, 12)).shape == (2, 3, 12)
    assert expected_distance(weights, t).shape == (2, 3, 1)
    assert invalid_mass(weights, torch.rand(2, 3, 7, 4) > 0.5).shape == (2, 3, 4)


def test_invalid_mass_is_the_weight_share_of_invalid_samples():
    weights = torch.tensor([[0.25, 0.5, 0.25]])
    invalid = torch.tensor([[[True, False], [False, False], [True, True]]])
    assert torch.allclose(invalid_mass(weights, invalid), torch.tensor([[0.5, 0.25]]))


def test_gradients_float64():
    t = torch.sort(torch.rand(3, 6, dtype=torch.float64) * 10 + 3, dim=-1).values
    sigma = (torch.rand(3, 6, dtype=torch.float64) + 0.1).requires_grad_()
    values = torch.rand(3, 6, 2, dtype=torch.float64, requires_grad=True)

    def render(s, v):
        weights = composite_weights(s, t)
        return composite_values(weights, v), expected_distance(weights, t)

    assert torch.autograd.gradcheck(render, (sigma, values))
    alphas = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(alphas_to_weights, (alphas,))
    deltas = torch.rand(3, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: densities_to_alphas(s, deltas, False), (sigma,))
