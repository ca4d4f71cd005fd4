"""PSNR and SSIM exactly as scikit-image computes them (the metrics SRN, pixelNeRF and DVR report).

SSIM follows ``skimage.metrics.structural_similarity(..., channel_axis=-1, data_range=1)`` with its
defaults: a uniform 7x7 window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariance (``N/(N-1)``), and the
mean taken over the pixels whose window lies inside the image (skimage crops 3 pixels per side), averaged
over channels. nerfstudio's own SSIM (torchmetrics, Gaussian 11x11) gives different numbers.
Framework-free torch; batched; computed in float64.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["MIN_MSE", "SSIM_K1", "SSIM_K2", "SSIM_WINDOW", "psnr", "ssim"]

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MIN_MSE = 1.0e-10
"""PSNR of identical images is capped at ``10 log10(1 / MIN_MSE) = 100`` dB so reports never hold ``inf``."""


def psnr(
    prediction: Float[Tensor, "*batch H W C"],
    target: Float[Tensor, "*batch H W C"],
    data_range: float = 1.0,
    mask: Optional[Bool[Tensor, "*batch H W"]] = None,
) -> Float[Tensor, "*batch"]:
    """Per-image PSNR in dB, ``10 log10(data_range^2 / mse)``.

    ``mask``: only these pixels (all their channels) enter the mean squared error, as PSNR of the selected pixels
    would, but with fixed shapes (no boolean indexing: no host sync on a GPU); an image without any selected
    pixel gets NaN.
    """
    assert (
        prediction.shape == target.shape and prediction.ndim >= 3
    ), f"expected matching [..., H, W, C] images, got {tuple(prediction.shape)} and {tuple(target.shape)}"
    error = (prediction.double() - target.double()) ** 2
    if mask is None:
        mse = error.flatten(start_dim=-3).mean(dim=-1)
    else:
        assert mask.shape == prediction.shape[:-1], f"mask must be {tuple(prediction.shape[:-1])}, got {mask.shape}"
        selected = mask[..., None].expand_as(error)
        mse = (error * selected).flatten(start_dim=-3).sum(dim=-1) / selected.flatten(start_dim=-3).sum(dim=-1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(MIN_MSE))


def ssim(
    prediction: Float[Tensor, "*batch H W C"], target: Float[Tensor, "*batch H W C"], data_range: float = 1.0
) -> Float[Tensor, "*batch"]:
    """Per-image SSIM, scikit-image's definition (see the module docstring). Images must be at least 7x7."""
    assert (
        prediction.shape == target.shape and prediction.ndim >= 3
    ), f"expected matching [..., H, W, C] images, got {tuple(prediction.shape)} and {tuple(target.shape)}"
    batch_shape = prediction.shape[:-3]
    height, width, channels = prediction.shape[-3:]
    assert min(height, width) >= SSIM_WINDOW, f"SSIM needs images of at least 7x7, got {height}x{width}"
    x = prediction.double().reshape(-1, height, width, channels).permute(0, 3, 1, 2)
    y = target.double().reshape(-1, height, width, channels).permute(0, 3, 1, 2)

    def window_mean(image: Tensor) -> Tensor:
        # No padding: exactly the windows skimage keeps after cropping its border.
        return F.avg_pool2d(image, kernel_size=SSIM_WINDOW, stride=1)

    num_samples = SSIM_WINDOW**2
    covariance_norm = num_samples / (num_samples - 1.0)
    mean_x, mean_y = window_mean(x), window_mean(y)
    var_x = covariance_norm * (window_mean(x * x) - mean_x * mean_x)
    var_y = covariance_norm * (window_mean(y * y) - mean_y * mean_y)
    cov_xy = covariance_norm * (window_mean(x * y) - mean_x * mean_y)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    numerator = (2.0 * mean_x * mean_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(dim=(1, 2, 3)).reshape(batch_shape)
