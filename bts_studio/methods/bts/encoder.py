"""The BTS image encoder: a torchvision ResNet and a Monodepth2-style decoder to a full-resolution feature map.

Module names mirror the official ``models/common/backbones/monodepth2.py`` so that an official checkpoint maps
onto this one key for key (``import_official.py``):

    encoder.encoder.*            torchvision ResNet (``ResnetEncoder.encoder``)
    decoder.decoder.{0..9}.conv.conv.*   ConvBlocks (upconv_{4,0}, upconv_{4,1}, ..., upconv_{0,1})
    decoder.decoder.10.conv.*    the scale-0 output head (Conv3x3, no activation)

Deviations (no effect on the output): the ResNet classifier ``fc`` is removed and only the scale-0 head exists,
because BTS's ``prediction_mode: default`` uses scale 0 only; the official heads 11-13 and ``fc`` are dropped
on import.
"""

from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from bts_studio.methods.common.backbone import ResnetEncoder

MONODEPTH2_MEAN = 0.45
MONODEPTH2_STD = 0.225
"""BTS normalises encoder inputs in [0, 1] as ``(x - 0.45) / 0.225`` (Monodepth2), not with ImageNet statistics."""

MIN_IMAGE_SIZE = 64
"""Smallest image side the encoder takes: the 1/32-scale features need 2 pixels for the decoder's padding."""


class _ReflectionPad1ChannelsLast(torch.autograd.Function):
    """``F.pad(x, (1, 1, 1, 1), mode="reflect")`` for a channels-last ``x``, with a channels-last output: the interior
    copied once, then two rows and two columns (the corners mirror both ways because the columns go last)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        out[:, :, 1:-1, 1:-1] = x
        out[:, :, 0, 1:-1] = x[:, :, 1]  # row -1 mirrors row 1
        out[:, :, -1, 1:-1] = x[:, :, -2]  # row h mirrors row h - 2
        out[:, :, :, 0] = out[:, :, :, 2]
        out[:, :, :, -1] = out[:, :, :, -3]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        n, c, h, w = grad.shape[0], grad.shape[1], grad.shape[2] - 2, grad.shape[3] - 2
        grad_x = torch.empty((n, c, h, w), dtype=grad.dtype, device=grad.device, memory_format=torch.channels_last)
        grad_x.copy_(grad[:, :, 1:-1, 1:-1])
        grad_x[:, :, :, 1] += grad[:, :, 1:-1, 0]
        grad_x[:, :, :, -2] += grad[:, :, 1:-1, -1]
        grad_x[:, :, 1, :] += grad[:, :, 0, 1:-1]
        grad_x[:, :, -2, :] += grad[:, :, -1, 1:-1]
        for row, source_row in ((1, 0), (-2, -1)):  # a corner mirrors the pixel one in from it both ways
            grad_x[:, :, row, 1] += grad[:, :, source_row, 0]
            grad_x[:, :, row, -2] += grad[:, :, source_row, -1]
        return grad_x


def reflection_pad_1(x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H+2 W+2"]:
    """Reflection padding by one pixel (``nn.ReflectionPad2d(1)``) that keeps a channels-last input channels-last.

    On CUDA, ``reflection_pad2d`` writes a contiguous (NCHW) output whatever its input's layout. Under the bf16
    channels-last encoder every padded activation was then copied back to channels-last for the convolution, forward
    and backward: 10.8 ms of the training batch's 53 ms on an H200 (docs/benchmarks.md, eleventh session). Padding
    the ``[B, 1, H, W, C]`` view with ``reflection_pad3d`` (one native op) measured 7 ms slower per training step
    than these strided copies. Equal to ``F.pad(x, (1, 1, 1, 1), mode="reflect")`` in value and gradient (tested);
    NCHW inputs take that call. Needs ``H, W >= 2``.
    """
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return _ReflectionPad1ChannelsLast.apply(x)
    return F.pad(x, (1, 1, 1, 1), mode="reflect")


class Conv3x3(nn.Module):
    """Reflection-padded 3x3 convolution (Monodepth2's ``Conv3x3``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(reflection_pad_1(x))


class ConvBlock(nn.Module):
    """Conv3x3 followed by ELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin(self.conv(x))


def upsample_nearest_2x(x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C 2*H 2*W"]:
    """Nearest-neighbour 2x upsampling in ``x``'s own dtype, also under autocast.

    CUDA autocast runs ``upsample_nearest2d`` in fp32. Under the opt-in bf16 encoder, every decoder stage made a
    full-resolution fp32 copy, and the next ``torch.cat`` promoted the skip features to fp32 as well. An H200 profile
    showed 5 of the decoder's 11 reflection pads on fp32 tensors and 13.6 ms of dtype copies per training batch
    (docs/benchmarks.md, tenth session). Nearest upsampling only copies values, so any dtype is exact.
    """
    with torch.autocast(x.device.type, enabled=False):
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Decoder(nn.Module):
    """Monodepth2-style U-Net decoder with a single (scale-0, full resolution) head of ``out_channels``."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        # BTS raises every decoder width to at least the output width.
        channels = [max(out_channels, c) for c in decoder_channels]
        blocks: List[nn.Module] = []
        for i in range(4, -1, -1):
            in_channels = encoder_channels[-1] if i == 4 else channels[i + 1]
            blocks.append(ConvBlock(in_channels, channels[i]))
            skip_channels = encoder_channels[i - 1] if i > 0 else 0
            blocks.append(ConvBlock(channels[i] + skip_channels, channels[i]))
        blocks.append(Conv3x3(channels[0], out_channels))
        self.decoder = nn.ModuleList(blocks)

    def forward(self, features: List[Tensor]) -> Tensor:
        x = features[-1]
        for stage, i in enumerate(range(4, -1, -1)):
            x = self.decoder[2 * stage](x)
            x = upsample_nearest_2x(x)
            if i > 0:
                skip = features[i - 1]
                x = torch.cat([x[..., : skip.shape[-2], : skip.shape[-1]], skip], dim=1)
            x = self.decoder[2 * stage + 1](x)
        return self.decoder[10](x)


class BTSEncoder(nn.Module):
    """Image ``[B, 3, H, W]`` in [0, 1] -> pixel-aligned features ``[B, C, H, W]``."""

    def __init__(
        self, num_layers: int = 50, feature_dim: int = 64, decoder_channels: Sequence[int] = (32, 32, 64, 128, 256)
    ):
        super().__init__()
        self.encoder = ResnetEncoder(num_layers, mean=MONODEPTH2_MEAN, std=MONODEPTH2_STD)
        self.decoder = Decoder(self.encoder.channels, decoder_channels, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, image: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B C H W"]:
        assert image.dim() == 4 and image.shape[1] == 3, f"image must be [B, 3, H, W], got {tuple(image.shape)}"
        if min(image.shape[-2:]) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"bts-density: images of {image.shape[-1]}x{image.shape[-2]} are too small for the encoder; both sides "
                f"need at least {MIN_IMAGE_SIZE} pixels (its 1/32 scale must be 2 pixels for reflection padding)"
            )
        features = self.decoder(self.encoder(image))
        if features.shape[-2:] != image.shape[-2:]:
            # Sizes that are not multiples of 32 come out slightly larger; features are pixel-aligned, so resize.
            features = F.interpolate(features, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return features

    def load_imagenet_weights(self, path: Optional[Path], search_torch_hub: bool = True) -> Optional[Path]:
        """Load torchvision's ImageNet weights into the ResNet (``common.backbone.load_imagenet_weights``)."""
        return self.encoder.load_imagenet_weights(path, search_torch_hub, method="bts-density")
