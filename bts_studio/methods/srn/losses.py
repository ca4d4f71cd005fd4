"""The three terms of SRN's training loss (Sitzmann et al. 2019, eq. 6, as the official code computes them).

    total = w_img * image_loss + w_depth * negative_depth_penalty + w_latent * latent_prior

with the official weights ``w_img = 200``, ``w_depth = 1e-3`` and ``w_latent = 1``. The depth term
carries a hidden factor ``1e4`` in the code, so its effective coefficient is 10 (classics.md A.2).
Framework-free torch.
"""

from jaxtyping import Float
from torch import Tensor

NEGATIVE_DEPTH_SCALE = 1.0e4
"""The factor SRN's code applies inside its depth regulariser (``srns.py`` ``get_regularization_loss``)."""


def signed_image_loss(prediction_signed: Float[Tensor, "*batch 3"], target: Float[Tensor, "*batch 3"]) -> Tensor:
    """Mean squared error in SRN's colour space ``[-1, 1]``.

    Args:
        prediction_signed: the pixel generator's linear output (SRN trains it against ``2 rgb - 1``).
        target: ground-truth colours in ``[0, 1]``.
    """
    assert prediction_signed.shape == target.shape, f"{tuple(prediction_signed.shape)} vs {tuple(target.shape)}"
    return ((prediction_signed - (2.0 * target - 1.0)) ** 2).mean()


def negative_depth_penalty(z_depth: Float[Tensor, "*batch 1"]) -> Tensor:
    """``1e4 * mean(min(z, 0)^2)``: penalises ray-marched points behind the camera (z-depth, not ray distance)."""
    return (z_depth.clamp(max=0.0) ** 2).mean() * NEGATIVE_DEPTH_SCALE


def latent_prior(codes: Float[Tensor, "*batch D"]) -> Tensor:
    """``mean(z^2)``: the Gaussian prior on the latent codes used in the batch."""
    return (codes**2).mean()
