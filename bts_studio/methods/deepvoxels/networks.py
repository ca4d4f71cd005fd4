"""DeepVoxels' networks (Sitzmann et al., CVPR 2019; ``custom_layers.py``, ``losses.py`` and ``pytorch_prototyping``
of the official code, classics.md B.1/B.2): feature extraction, GRU integration, 3D inpainting, occlusion, rendering,
and the PatchGAN discriminator. Shapes: ``B`` batch (1 in DeepVoxels), ``C`` grid features, ``G`` grid side,
``P`` frustum depth planes, ``h x w`` the feature/frustum resolution, ``H x W`` the image resolution.

2D convolutions pad by reflection, 3D ones by replication, as the official ``Conv2dSame`` / ``ReplicationPad3d``.
"""

import math
from typing import List

import torch
from jaxtyping import Float
from torch import Tensor, nn


def _conv(dims: int, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Module:
    """A conv whose output keeps the size (kernel 3, stride 1) or halves it (kernel 4, stride 2)."""
    if dims == 2:
        return nn.Conv2d(cin, cout, kernel, stride, padding=1, padding_mode="reflect", bias=bias)
    return nn.Conv3d(cin, cout, kernel, stride, padding=1, padding_mode="replicate", bias=bias)


def _norm(dims: int, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)


def _up(dims: int, cin: int, cout: int) -> nn.Module:
    """Transposed 4x4(x4) stride-2 convolution: doubles the size."""
    layer = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
    return layer(cin, cout, kernel_size=4, stride=2, padding=1, bias=False)


def _dropout(dims: int, p: float) -> nn.Module:
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if dims == 2 else nn.Dropout3d(p)


class UNetBlock(nn.Module):
    """One level of a U-Net: stride-2 down (LeakyReLU 0.2), the inner levels, transposed-conv up (ReLU), skip concat.

    The innermost level (reaching 1 voxel/pixel in DeepVoxels' full-depth U-Nets) has no normalisation on its down
    path: batch norm over a single value per channel is undefined for batch size 1.
    """

    def __init__(self, dims: int, outer: int, inner: int, submodule: nn.Module | None, dropout: float) -> None:
        super().__init__()
        down: List[nn.Module] = [_conv(dims, outer, inner, 4, stride=2, bias=submodule is None)]
        if submodule is not None:
            down.append(_norm(dims, inner))
        down.append(nn.LeakyReLU(0.2, inplace=True))
        inner_out = inner if submodule is None else 2 * inner
        up = [_up(dims, inner_out, outer), _norm(dims, outer), nn.ReLU(inplace=True), _dropout(dims, dropout)]
        self.down = nn.Sequential(*down)
        self.submodule = submodule if submodule is not None else nn.Identity()
        self.up = nn.Sequential(*up)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.up(self.submodule(self.down(x)))], dim=1)


class UNet(nn.Module):
    """The ``pytorch_prototyping`` U-Net in 2D or 3D: 3x3 in-conv, ``num_down`` levels doubling the width up to
    ``max_channels``, 3x3 out-conv; ``outermost_linear`` leaves the output without batch norm and ReLU."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        nf0: int,
        num_down: int,
        max_channels: int,
        dropout: float = 0.0,
        outermost_linear: bool = False,
    ) -> None:
        super().__init__()
        assert dims in (2, 3) and num_down >= 1, f"dims {dims}, num_down {num_down}"
        widths = [min(nf0 * 2**level, max_channels) for level in range(num_down + 1)]
        block: nn.Module | None = None
        for level in reversed(range(num_down)):
            block = UNetBlock(dims, widths[level], widths[level + 1], block, dropout)
        self.num_down = num_down
        self.inp = nn.Sequential(_conv(dims, in_channels, nf0, 3), _norm(dims, nf0), nn.LeakyReLU(0.2, inplace=True))
        self.blocks = block
        out: List[nn.Module] = [_conv(dims, 2 * nf0, out_channels, 3, bias=outermost_linear)]
        if not outermost_linear:
            out += [_norm(dims, out_channels), nn.ReLU(inplace=True)]
        self.out = nn.Sequential(*out)

    def forward(self, x: Tensor) -> Tensor:
        size = 2**self.num_down
        assert all(s % size == 0 for s in x.shape[2:]), f"U-Net input {tuple(x.shape)} not divisible by {size}"
        return self.out(self.blocks(self.inp(x)))


def num_halvings(larger: int, smaller: int) -> int:
    """``log2(larger / smaller)`` for power-of-two ratios; raises ValueError otherwise."""
    ratio = larger / smaller
    count = round(math.log2(ratio)) if ratio >= 1 else -1
    if count < 0 or 2**count * smaller != larger:
        raise ValueError(
            f"deepvoxels needs the image side ({larger}) to be a power-of-two multiple of the feature side ({smaller})"
        )
    return count


class FeatureExtractor(nn.Module):
    """Image -> ``C``-channel feature map at ``h x w``: stride-2 downsampling blocks, then a 2D U-Net (B.1 step 1)."""

    def __init__(
        self, image_side: int, feature_side: int, out_channels: int, down_nf0: int, unet_nf0: int, max_channels: int
    ) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        cin = 3
        for level in range(num_halvings(image_side, feature_side)):
            cout = min(down_nf0 * 2**level, 4 * down_nf0)
            layers += [_conv(2, cin, cout, 3), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            layers += [_conv(2, cout, cout, 4, stride=2), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.downsampling = nn.Sequential(*layers)
        self.unet = UNet(2, cin, out_channels, unet_nf0, int(math.log2(feature_side)), max_channels)

    def forward(self, image: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B C h w"]:
        return self.unet(self.downsampling(image))


class IntegrationNet(nn.Module):
    """DeepVoxels' GRU update of the persistent grid (B.1 step 3): 3x3x3 convolutional gates over the old state and
    the lifted observation, each with the 3 coordinate channels appended; per-voxel (scalar) reset and update gates;
    Dropout (0.2) on the candidate branches."""

    def __init__(self, channels: int, dropout: float = 0.2) -> None:
        super().__init__()
        width = channels + 3

        def conv(cout: int) -> nn.Module:
            return nn.Conv3d(width, cout, 3, padding=1, padding_mode="replicate")

        self.reset_old, self.reset_new = conv(1), conv(1)
        self.update_old, self.update_new = conv(1), conv(1)
        self.candidate_old, self.candidate_new = conv(channels), conv(channels)
        self.dropout = _dropout(3, dropout)

    def forward(
        self,
        observation: Float[Tensor, "B C G G G"],  # noqa: F821
        state: Float[Tensor, "B C G G G"],  # noqa: F821
        coords: Float[Tensor, "B 3 G G G"],  # noqa: F821
    ) -> Float[Tensor, "B C G G G"]:  # noqa: F821
        assert observation.shape == state.shape, f"observation {tuple(observation.shape)} vs state {tuple(state.shape)}"
        new = torch.cat([observation, coords], dim=1)
        old = torch.cat([state, coords], dim=1)
        reset = torch.sigmoid(self.reset_old(old) + self.reset_new(new))
        update = torch.sigmoid(self.update_old(old) + self.update_new(new))
        reset_old = torch.cat([reset * state, coords], dim=1)
        candidate = torch.relu(self.candidate_new(self.dropout(new)) + self.candidate_old(self.dropout(reset_old)))
        return (1.0 - update) * state + update * candidate


class OcclusionNet(nn.Module):
    """Frustum features -> per-sample visibility scores (B.1 step 6; the softmax over depth is
    ``bts_studio.core.voxel_grid.visibility_weights``): a depth-coordinate channel, Conv3d + BN + ReLU to ``nf``
    channels, a 3D U-Net (width ``nf`` up to ``4 nf``), and a 1-channel conv over ``[U-Net output, input, depth]``."""

    def __init__(self, channels: int, nf: int, frustum_side: int, num_planes: int) -> None:
        super().__init__()
        self.num_planes = num_planes
        self.inp = nn.Sequential(_conv(3, channels + 1, nf, 3), nn.BatchNorm3d(nf), nn.ReLU(inplace=True))
        num_down = int(math.log2(min(frustum_side, num_planes)))
        self.unet = UNet(3, nf, nf, nf, num_down, 4 * nf)
        self.out = _conv(3, 2 * nf + 1, 1, 3, bias=True)

    def forward(self, frustum: Float[Tensor, "B C P h w"]) -> Float[Tensor, "B 1 P h w"]:
        b, _, p, h, w = frustum.shape
        assert p == self.num_planes, f"expected {self.num_planes} depth planes, got {p}"
        depth = (torch.arange(p, dtype=frustum.dtype, device=frustum.device) - p / 2) / p
        depth = depth[None, None, :, None, None].expand(b, 1, p, h, w)
        features = self.inp(torch.cat([frustum, depth], dim=1))
        return self.out(torch.cat([self.unet(features), features, depth], dim=1))


class RenderingNet(nn.Module):
    """Collapsed features ``h x w`` -> image ``H x W`` (B.1 step 7): a 2D U-Net with dropout 0.1, transposed-conv
    upsampling blocks of ``up_channels`` (BN, ReLU, dropout, 3x3 post-conv), a 3x3 conv to ``up_channels / 2`` + BN +
    ReLU, a 3x3 conv to RGB and tanh; the model scales the result by 0.5 to DeepVoxels' [-0.5, 0.5] colours."""

    def __init__(
        self,
        in_channels: int,
        feature_side: int,
        image_side: int,
        unet_nf0: int,
        unet_out: int,
        max_channels: int,
        up_channels: int,
    ) -> None:
        super().__init__()
        self.unet = UNet(2, in_channels, unet_out, unet_nf0, int(math.log2(feature_side)), max_channels, dropout=0.1)
        layers: List[nn.Module] = []
        cin = unet_out
        for _ in range(num_halvings(image_side, feature_side)):
            layers += [_up(2, cin, up_channels), nn.BatchNorm2d(up_channels), nn.ReLU(inplace=True), nn.Dropout2d(0.1)]
            layers += [_conv(2, up_channels, up_channels, 3), nn.BatchNorm2d(up_channels), nn.ReLU(inplace=True)]
            cin = up_channels
        half = max(up_channels // 2, 1)
        layers += [_conv(2, cin, half, 3), nn.BatchNorm2d(half), nn.ReLU(inplace=True), _conv(2, half, 3, 3, bias=True)]
        self.upsampling = nn.Sequential(*layers)

    def forward(self, features: Float[Tensor, "B C h w"]) -> Float[Tensor, "B 3 H W"]:
        return torch.tanh(self.upsampling(self.unet(features)))


class PatchDiscriminator(nn.Module):
    """PatchGAN (``losses.py`` ``PatchDiscriminator``): 4x4 convs, ``ndf`` doubling per layer, BN, Dropout2d(0.5),
    LeakyReLU 0.2, and a sigmoid probability per patch."""

    def __init__(self, ndf: int = 28, num_layers: int = 3) -> None:
        super().__init__()
        layers: List[nn.Module] = [_conv(2, 3, ndf, 4, stride=2, bias=True), nn.LeakyReLU(0.2, inplace=True)]
        cin = ndf
        for level in range(1, num_layers + 1):
            cout = ndf * min(2**level, 8)
            stride = 2 if level < num_layers else 1
            layers += [_conv(2, cin, cout, 4, stride=stride), nn.BatchNorm2d(cout), nn.Dropout2d(0.5)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers += [_conv(2, cin, 1, 4, bias=True), nn.Sigmoid()]
        self.layers = nn.Sequential(*layers)

    def forward(self, image: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 1 h w"]:
        return self.layers(image)
