"""Tier 1: BTS's positional encoding (order, frequencies, width)."""

import math

import torch

from bts_studio.core.positional_encoding import encoding_width, positional_encoding


def _official(x: torch.Tensor, num_freqs: int = 6, freq_factor: float = 1.5) -> torch.Tensor:
    """PixelNeRF/BTS ``PositionalEncoding.forward`` (phase trick), transcribed."""
    freqs = freq_factor * 2.0 ** torch.arange(num_freqs, dtype=x.dtype)
    freqs = torch.repeat_interleave(freqs, 2).view(1, -1, 1)
    phases = torch.zeros(2 * num_freqs, dtype=x.dtype)
    phases[1::2] = math.pi * 0.5
    embed = x.unsqueeze(1).repeat(1, num_freqs * 2, 1)
    embed = torch.sin(torch.addcmul(phases.view(1, -1, 1), embed, freqs)).view(x.shape[0], -1)
    return torch.cat((x, embed), dim=-1)


def test_matches_the_official_layout():
    x = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    encoded = positional_encoding(x)
    assert encoded.shape == (50, 39) and encoding_width(3) == 39
    assert torch.allclose(encoded, _official(x), atol=1e-12)


def test_batch_dimensions_and_gradients():
    x = torch.rand(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert positional_encoding(x, num_freqs=2).shape == (2, 4, 15)
    assert torch.autograd.gradcheck(lambda v: positional_encoding(v, num_freqs=3), (x,))
