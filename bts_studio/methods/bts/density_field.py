"""The BTS density field: encoder features at a point's projection + positional encoding -> tiny MLP -> softplus.

Mirrors ``BTSNet`` of the official code (``models/bts/model/models_bts.py``) with ``code_mode: z``,
``inv_z: true``, ``learn_empty: false``, ``empty_empty: false``, ``sample_color: true`` and ``mlp_coarse`` a
``ResnetFC`` with zero blocks: ``lin_in`` (103 -> 64), ReLU, ``lin_out`` (64 -> 1). The MLP input is
``[feature (64), PE(x, y, z_code) (39)]`` in that order. Points outside the input frustum read border features
and keep their density (BTS does not zero it); they are flagged as invalid for the loss.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from bts_studio.core.feature_sampling import inverse_depth_code, outside_frustum, project_to_views, sample_maps
from bts_studio.core.positional_encoding import encoding_width, positional_encoding
from bts_studio.methods.bts.encoder import BTSEncoder


class DensityMLP(nn.Module):
    """``lin_out(relu(lin_in(x)))`` with Kaiming-normal (fan-in) weights and zero biases, as ``ResnetFC``."""

    def __init__(self, in_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.lin_in = nn.Linear(in_dim, hidden_dim)
        self.lin_out = nn.Linear(hidden_dim, 1)
        for layer in (self.lin_in, self.lin_out):
            nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_in")
            nn.init.zeros_(layer.bias)

    def forward(self, x: Float[Tensor, "*batch D"]) -> Float[Tensor, "*batch 1"]:
        return self.lin_out(torch.relu(self.lin_in(x)))


class BTSDensityField(nn.Module):
    """Encoder plus density MLP. ``encode`` once per input image, then query ``density`` at any points."""

    def __init__(
        self,
        num_layers: int = 50,
        feature_dim: int = 64,
        decoder_channels: tuple = (32, 32, 64, 128, 256),
        hidden_dim: int = 64,
        num_freqs: int = 6,
        freq_factor: float = 1.5,
        code_near: float = 3.0,
        code_far: float = 80.0,
    ) -> None:
        super().__init__()
        self.encoder = BTSEncoder(num_layers, feature_dim, decoder_channels)
        self.num_freqs = num_freqs
        self.freq_factor = freq_factor
        self.code_near = code_near
        self.code_far = code_far
        self.mlp_coarse = DensityMLP(feature_dim + encoding_width(3, num_freqs), hidden_dim)

    def encode(self, images: Float[Tensor, "B 3 H W"], flip: bool = False) -> Float[Tensor, "B C H W"]:
        """Feature maps of images in [0, 1]. ``flip`` encodes the mirrored image and mirrors the features back
        (BTS's flip augmentation: ray geometry is untouched)."""
        if flip:
            return torch.flip(self.encoder(torch.flip(images, dims=(-1,))), dims=(-1,))
        return self.encoder(images)

    def density(
        self,
        points: Float[Tensor, "B N 3"],
        features: Float[Tensor, "B C H W"],
        K: Float[Tensor, "B 3 3"],
        w2c_opencv: Float[Tensor, "B 3 4"],
    ) -> tuple[Float[Tensor, "B N"], Bool[Tensor, "B N"]]:
        """Density at world points, conditioned on the encoded input view of each batch element.

        Args:
            points: world points (nerfstudio world, metres for KITTI-360).
            features: ``encode`` output; its size is the input image size that ``K`` refers to.
            K: input-view intrinsics in nerfstudio pixel units.
            w2c_opencv: input-view world-to-camera pose, OpenCV axes.

        Returns:
            ``sigma >= 0`` (softplus) and ``outside``: the point is outside the input view's frustum.
        """
        height, width = features.shape[-2:]
        xy, z = project_to_views(points, K[:, None], w2c_opencv[:, None], height, width)
        xy, z = xy[:, 0], z[:, 0]
        code = torch.cat([xy, inverse_depth_code(z, self.code_near, self.code_far)[..., None]], dim=-1)
        encoded = positional_encoding(code, self.num_freqs, self.freq_factor)
        sampled = sample_maps(features[:, None], xy[:, None])[:, 0]
        sigma = F.softplus(self.mlp_coarse(torch.cat([sampled, encoded.to(sampled.dtype)], dim=-1)))[..., 0]
        return sigma, outside_frustum(xy, z)
