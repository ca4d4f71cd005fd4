"""BTS's density head on gathered features, two ways with one signature: the unfused twin and the projected path.

The density of a point is (``methods/bts/density_field.py``, BTS's ``mlp_coarse`` with zero ResNet blocks)::

    sigma = softplus(w_out . relu(W_in [sample(F, xy) ; PE(code)] + b_in) + b_out)

with ``F`` the ``[C, H, W]`` feature map, ``sample`` bilinear ``grid_sample`` (border padding,
``align_corners=False``) and ``PE`` BTS's positional encoding of the 3-vector ``code = (x, y, inverse-depth code)``.
Split ``W_in = [W_f | W_pe]``. Bilinear sampling is a fixed convex combination of four pixels of ``F``, so it is
linear in ``F`` and commutes with the 1x1 projection ``W_f``::

    W_f sample(F, xy) = sample(W_f F, xy)

(border padding clips the coordinate before the weights are formed, so the equality holds outside the image too;
behind-camera points use the same clamped projection in every path). The projected map ``W_f F`` has ``hidden``
channels per *pixel* (123 k pixels at 192x640) instead of ``C + E = 103`` inputs per *sample* (7.9 M samples per
image at 64 samples/ray), so the fast paths never build the ``[samples, 103]`` input nor run the first GEMM on it:

* :func:`density_unfused` -- the twin: the official computation as written (gather, concatenate, MLP).
* :func:`density_projected` -- pure PyTorch: 1x1-project the map, gather ``hidden`` channels, add ``W_pe PE + b_in``.
  Equal to the twin in exact arithmetic; autograd gives its gradients.

The Triton kernel with the same signature lives in ``methods/bts/triton_density.py`` (core stays torch-only).
Both paths here keep fp32 tensors; their GEMMs follow ``torch.backends.cuda.matmul.allow_tf32``.
"""

from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from bts_studio.core.feature_sampling import sample_maps
from bts_studio.core.positional_encoding import encoding_width, positional_encoding

__all__ = ["DensityFn", "check_density_inputs", "density_projected", "density_unfused", "projected_feature_map"]

DensityFn = Callable[..., Tensor]
"""Signature shared by every density path: ``(features, xy, code, w_in, b_in, w_out, b_out, num_freqs,
freq_factor) -> sigma``."""


def check_density_inputs(
    features: Tensor, xy: Tensor, code: Tensor, w_in: Tensor, w_out: Tensor, num_freqs: int
) -> None:
    """Assert the shapes shared by every density path (see :func:`density_unfused`)."""
    assert features.dim() == 4, f"features must be [B, C, H, W], got {tuple(features.shape)}"
    b, c = features.shape[:2]
    assert xy.dim() == 3 and xy.shape[0] == b and xy.shape[-1] == 2, f"xy must be [{b}, N, 2], got {tuple(xy.shape)}"
    assert code.shape == (*xy.shape[:2], 3), f"code must be {(*xy.shape[:2], 3)}, got {tuple(code.shape)}"
    width = c + encoding_width(3, num_freqs)
    assert (
        w_in.dim() == 2 and w_in.shape[1] == width
    ), f"lin_in weight must be [hidden, {width}], got {tuple(w_in.shape)}"
    assert w_out.shape == (1, w_in.shape[0]), f"lin_out weight must be [1, {w_in.shape[0]}], got {tuple(w_out.shape)}"


def density_unfused(
    features: Float[Tensor, "B C H W"],
    xy: Float[Tensor, "B N 2"],
    code: Float[Tensor, "B N 3"],
    w_in: Float[Tensor, "hidden CE"],
    b_in: Float[Tensor, " hidden"],
    w_out: Float[Tensor, "1 hidden"],
    b_out: Float[Tensor, "1"],
    num_freqs: int,
    freq_factor: float,
) -> Float[Tensor, "B N"]:
    """The twin: ``softplus(lin_out(relu(lin_in([sample(F, xy) ; PE(code)]))))`` as BTS computes it.

    Args:
        features: input-view feature map (``CE = C + 3 (2 num_freqs + 1)`` inputs of ``lin_in``).
        xy: ``grid_sample`` coordinates (``align_corners=False``), any value (border padding outside ``[-1, 1]``).
        code: ``(x, y, inverse-depth code)``, the positional encoding's input.
        w_in, b_in, w_out, b_out: ``lin_in`` and ``lin_out`` of the density MLP.

    Returns:
        ``sigma >= 0``.
    """
    check_density_inputs(features, xy, code, w_in, w_out, num_freqs)
    sampled = sample_maps(features[:, None], xy[:, None])[:, 0]
    encoded = positional_encoding(code, num_freqs, freq_factor).to(sampled.dtype)
    hidden = torch.relu(F.linear(torch.cat([sampled, encoded], dim=-1), w_in, b_in))
    return F.softplus(F.linear(hidden, w_out, b_out))[..., 0]


def projected_feature_map(
    features: Float[Tensor, "B C H W"], w_in: Float[Tensor, "hidden CE"]
) -> Float[Tensor, "B hidden H W"]:
    """``W_f F``: the feature columns of ``lin_in`` applied to every pixel (a 1x1 convolution, no bias)."""
    c = features.shape[1]
    return F.conv2d(features, w_in[:, :c, None, None])


def density_projected(
    features: Float[Tensor, "B C H W"],
    xy: Float[Tensor, "B N 2"],
    code: Float[Tensor, "B N 3"],
    w_in: Float[Tensor, "hidden CE"],
    b_in: Float[Tensor, " hidden"],
    w_out: Float[Tensor, "1 hidden"],
    b_out: Float[Tensor, "1"],
    num_freqs: int,
    freq_factor: float,
) -> Float[Tensor, "B N"]:
    """Same as :func:`density_unfused` (module docstring: ``W_f sample(F) = sample(W_f F)``), gathering the
    projected map instead of the features."""
    check_density_inputs(features, xy, code, w_in, w_out, num_freqs)
    c = features.shape[1]
    gathered = sample_maps(projected_feature_map(features, w_in)[:, None], xy[:, None])[:, 0]
    encoded = positional_encoding(code, num_freqs, freq_factor).to(gathered.dtype)
    hidden = torch.relu(gathered + F.linear(encoded, w_in[:, c:], b_in))
    return F.softplus(F.linear(hidden, w_out, b_out))[..., 0]
