"""Volume compositing of point samples, as in Behind the Scenes (PixelNeRF's renderer).

For samples at distances ``t_k`` with densities ``sigma_k``:
``delta_k = t_{k+1} - t_k`` (the last one ``LAST_DELTA``), ``alpha_k = 1 - exp(-delta_k sigma_k)``,
``w_k = alpha_k prod_{j<k} (1 - alpha_j + 1e-10)``. With ``terminate_last`` (BTS's ``hard_alpha_cap``) the
last alpha is 1, so every ray ends by the far plane and its weights sum to 1 (up to the 1e-10 guard).
Expected depth is ``sum_k w_k t_k`` (no background term).
"""

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

__all__ = [
    "LAST_DELTA",
    "TRANSMITTANCE_EPS",
    "alphas_to_weights",
    "composite_values",
    "composite_weights",
    "densities_to_alphas",
    "expected_distance",
    "invalid_mass",
    "sample_deltas",
]

LAST_DELTA = 1e10
"""Length given to the interval after the last sample (BTS's ``delta_inf``)."""

TRANSMITTANCE_EPS = 1e-10
"""Added to ``1 - alpha`` inside the transmittance product, as BTS does (keeps gradients finite at alpha = 1)."""


def sample_deltas(distances: Float[Tensor, "*batch S"], last_delta: float = LAST_DELTA) -> Float[Tensor, "*batch S"]:
    """Distances from each sample to the next; the last sample gets ``last_delta``."""
    assert distances.shape[-1] >= 1, "need at least one sample per ray"
    gaps = distances[..., 1:] - distances[..., :-1]
    return torch.cat([gaps, torch.full_like(distances[..., :1], last_delta)], dim=-1)


def densities_to_alphas(
    densities: Float[Tensor, "*batch S"], deltas: Float[Tensor, "*batch S"], terminate_last: bool = True
) -> Float[Tensor, "*batch S"]:
    """``alpha = 1 - exp(-|delta| relu(sigma))``; with ``terminate_last`` the last alpha is exactly 1."""
    assert densities.shape == deltas.shape, f"densities {tuple(densities.shape)} vs deltas {tuple(deltas.shape)}"
    alphas = 1.0 - torch.exp(-deltas.abs() * torch.relu(densities))
    if terminate_last:
        alphas = torch.cat([alphas[..., :-1], torch.ones_like(alphas[..., -1:])], dim=-1)
    return alphas


def alphas_to_weights(alphas: Float[Tensor, "*batch S"]) -> Float[Tensor, "*batch S"]:
    """Compositing weights ``w_k = alpha_k * prod_{j<k} (1 - alpha_j + 1e-10)``."""
    survive = 1.0 - alphas + TRANSMITTANCE_EPS
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alphas[..., :1]), survive[..., :-1]], dim=-1), dim=-1)
    return alphas * transmittance


def composite_weights(
    densities: Float[Tensor, "*batch S"], distances: Float[Tensor, "*batch S"], terminate_last: bool = True
) -> Float[Tensor, "*batch S"]:
    """Weights of point samples at ``distances`` with ``densities`` (deltas, alphas, transmittance in one go)."""
    return alphas_to_weights(densities_to_alphas(densities, sample_deltas(distances), terminate_last))


def composite_values(
    weights: Float[Tensor, "*batch S"], values: Float[Tensor, "*batch S C"]
) -> Float[Tensor, "*batch C"]:
    """Weighted sum of per-sample values along each ray, e.g. colours ``[..., S, 3]`` (or ``[..., S, V * 3]``)."""
    assert values.shape[:-1] == weights.shape, f"values {tuple(values.shape)} vs weights {tuple(weights.shape)}"
    return (weights[..., None] * values).sum(dim=-2)


def expected_distance(
    weights: Float[Tensor, "*batch S"], distances: Float[Tensor, "*batch S"]
) -> Float[Tensor, "*batch 1"]:
    """Expected termination distance ``sum_k w_k t_k`` (BTS's rendered depth), with a trailing unit dimension."""
    assert weights.shape == distances.shape, f"weights {tuple(weights.shape)} vs distances {tuple(distances.shape)}"
    return (weights * distances).sum(dim=-1, keepdim=True)


def invalid_mass(
    weights: Float[Tensor, "*batch S"], invalid: Shaped[Tensor, "*batch S V"]
) -> Float[Tensor, "*batch V"]:
    """Weight-integrated invalid indicator per view: ``sum_k w_k [sample k invalid in view v]`` (``invalid``: bool
    or 0/1 floats)."""
    assert invalid.shape[:-1] == weights.shape, f"invalid {tuple(invalid.shape)} vs weights {tuple(weights.shape)}"
    return (weights[..., None] * invalid.to(weights.dtype)).sum(dim=-2)


def occupancy_behind_surface(
    weights: Float[Tensor, "*batch S"],
    densities: Float[Tensor, "*batch S"],
    distances: Float[Tensor, "*batch S"],
    band: float,
    threshold: float,
) -> Float[Tensor, "*batch 1"]:
    """Share of the samples in ``(surface, surface + band]`` along each ray whose density exceeds ``threshold``.

    The surface is the first sample where the accumulated weight reaches 0.5 (the median depth). This is what a
    density field knows beyond depth: a depth map stops at the first surface, while BTS's field also predicts
    whether the space behind it is occupied (its occupancy evaluation thresholds density at 0.5, ``eval.occupancy``).
    Rays with no sample in the band get 0. ``band`` is in the units of ``distances``.
    """
    assert (
        weights.shape == densities.shape == distances.shape
    ), f"weights {tuple(weights.shape)}, densities {tuple(densities.shape)}, distances {tuple(distances.shape)}"
    surface_index = (weights.cumsum(dim=-1) < 0.5).sum(dim=-1, keepdim=True).clamp_max(weights.shape[-1] - 1)
    surface = torch.gather(distances, -1, surface_index)
    in_band = (distances > surface) & (distances <= surface + band)
    occupied = (densities > threshold) & in_band
    return (occupied.sum(dim=-1, keepdim=True) / in_band.sum(dim=-1, keepdim=True).clamp_min(1)).to(weights.dtype)
