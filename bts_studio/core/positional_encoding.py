"""The positional encoding of Behind the Scenes (PixelNeRF's ``PositionalEncoding``, ``models/common/model/code.py``).

Frequencies ``f_k = freq_factor * 2^k`` for ``k < num_freqs`` (BTS: 6 frequencies, factor 1.5 -> 1.5 ... 48).
Output layout, which pretrained MLP weights depend on::

    [x_0 .. x_{D-1},  sin(f_0 x_0) .. sin(f_0 x_{D-1}),  cos(f_0 x_0) .. cos(f_0 x_{D-1}),  sin(f_1 x_0) ...]

i.e. the raw input first (``include_input``), then per frequency a block of sines and a block of cosines.
Unlike nerfstudio's ``NeRFEncoding`` there is no 2*pi factor. Output width ``D * (1 + 2 num_freqs)``.
"""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["BTS_FREQ_FACTOR", "BTS_NUM_FREQS", "encoding_width", "positional_encoding"]

BTS_NUM_FREQS = 6
BTS_FREQ_FACTOR = 1.5


def encoding_width(in_dim: int, num_freqs: int = BTS_NUM_FREQS, include_input: bool = True) -> int:
    """Number of output channels of :func:`positional_encoding` (39 for BTS's 3-vector)."""
    return in_dim * (2 * num_freqs + (1 if include_input else 0))


def positional_encoding(
    x: Float[Tensor, "*batch D"],
    num_freqs: int = BTS_NUM_FREQS,
    freq_factor: float = BTS_FREQ_FACTOR,
    include_input: bool = True,
) -> Float[Tensor, "*batch E"]:
    """Encode ``x`` as ``[x, sin(f_0 x), cos(f_0 x), sin(f_1 x), ...]`` (see module docstring for the order).

    Args:
        x: inputs, last dimension ``D``.
        num_freqs: number of frequencies.
        freq_factor: the lowest frequency; frequency ``k`` is ``freq_factor * 2**k``.
        include_input: prepend ``x`` itself.

    Returns:
        ``[..., D * (2 num_freqs + include_input)]``.
    """
    assert x.dim() >= 1, "x needs a channel dimension"
    freqs = freq_factor * (2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype))
    scaled = x[..., None, :] * freqs[:, None]  # [..., F, D]
    blocks = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2)  # [..., F, 2, D]
    encoded = blocks.flatten(start_dim=-3)
    if include_input:
        encoded = torch.cat([x, encoded], dim=-1)
    return encoded
