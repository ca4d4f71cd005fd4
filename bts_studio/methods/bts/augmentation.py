"""BTS's colour augmentation: one ColorJitter draw per frame group, applied to every image of the group.

Official: ``datasets/kitti_360/kitti_360_dataset.py`` draws ``ColorJitter.get_params(brightness=(0.8, 1.2),
contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.1, 0.1))`` once per sample and applies the four adjustments in
the drawn random order to all 8 frames (``utils/augmentation.py``). The loss, the colour lookups and the encoder
all see the jittered images. Runs on whatever device the images are on.

:func:`apply_colour_jitter` applies one draw to one group with torchvision's own adjustments (the reference, used on
the CPU). :func:`apply_colour_jitter_batch` applies a draw per group to a whole batch at once (used on CUDA): the
per-group loop issued ~1,230 tensor ops for BTS's 16 groups, 74 % of a training batch draw's ops, and on an H200
that host time was most of the 23 ms by which an ``ns-train`` step exceeded the model-only step (issue 17, twelfth
session). The batched twin issues each operation once per position in the drawn orders, on the groups that drew
it there; a test compares it with the reference.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torchvision.transforms.v2.functional as TF
from jaxtyping import Float
from torch import Tensor

try:  # torchvision's own HSV conversions (private, stable since the v2 API); without them the batch runs per group
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv
except ImportError:  # pragma: no cover - depends on the installed torchvision
    _hsv_to_rgb = _rgb_to_hsv = None


@dataclass
class ColourJitterRanges:
    """Ranges of the jitter factors (BTS's values by default)."""

    brightness: Tuple[float, float] = (0.8, 1.2)
    contrast: Tuple[float, float] = (0.8, 1.2)
    saturation: Tuple[float, float] = (0.8, 1.2)
    hue: Tuple[float, float] = (-0.1, 0.1)


@dataclass
class ColourJitterDraw:
    """One draw: the order of the four operations and their factors."""

    order: List[int]
    brightness: float
    contrast: float
    saturation: float
    hue: float


def draw_colour_jitter(ranges: ColourJitterRanges, generator: torch.Generator | None = None) -> ColourJitterDraw:
    """Draw like ``torchvision.transforms.ColorJitter.get_params``: a random order, then uniform factors."""

    def uniform(bounds: Tuple[float, float]) -> float:
        return float(torch.empty(1).uniform_(bounds[0], bounds[1], generator=generator))

    order = torch.randperm(4, generator=generator).tolist()
    return ColourJitterDraw(
        order, uniform(ranges.brightness), uniform(ranges.contrast), uniform(ranges.saturation), uniform(ranges.hue)
    )


def apply_colour_jitter(images: Float[Tensor, "V 3 H W"], draw: ColourJitterDraw) -> Float[Tensor, "V 3 H W"]:
    """Apply one draw to all images of a group (float images in [0, 1]); contrast uses each image's own mean."""
    for operation in draw.order:
        if operation == 0:
            images = TF.adjust_brightness(images, draw.brightness)
        elif operation == 1:
            images = TF.adjust_contrast(images, draw.contrast)
        elif operation == 2:
            images = TF.adjust_saturation(images, draw.saturation)
        else:
            images = TF.adjust_hue(images, draw.hue)
    return images


def apply_colour_jitter_groups(
    images: Float[Tensor, "B V 3 H W"], draws: Sequence[ColourJitterDraw]
) -> Float[Tensor, "B V 3 H W"]:
    """:func:`apply_colour_jitter` of ``draws[b]`` to each group ``images[b]``, one group at a time: torchvision's
    own adjustments, the reference of :func:`apply_colour_jitter_batch` (and what the CPU runs)."""
    return torch.stack([apply_colour_jitter(group, draw) for group, draw in zip(images, draws, strict=True)])


def _blend(image1: Tensor, image2: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's ``_blend`` (float images) with a per-group ``ratio`` broadcast against the images."""
    return (image1 * ratio + image2 * (1.0 - ratio)).clamp_(0.0, 1.0)


def _brightness(images: Tensor, factor: Tensor) -> Tensor:
    return images.mul(factor).clamp_(0.0, 1.0)


def _contrast(images: Tensor, factor: Tensor) -> Tensor:
    mean = TF.rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)  # each image's own mean
    return _blend(images, mean, factor)


def _saturation(images: Tensor, factor: Tensor) -> Tensor:
    return _blend(images, TF.rgb_to_grayscale(images), factor)


def _hue(images: Tensor, factor: Tensor) -> Tensor:
    hsv = _rgb_to_hsv(images)
    h, s, v = hsv.unbind(dim=-3)
    h = (h + factor[..., 0, :, :]).remainder_(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


_OPERATIONS: Dict[int, Callable[[Tensor, Tensor], Tensor]] = {
    0: _brightness,
    1: _contrast,
    2: _saturation,
    3: _hue,
}


def apply_colour_jitter_batch(
    images: Float[Tensor, "B V 3 H W"], draws: Sequence[ColourJitterDraw]
) -> Float[Tensor, "B V 3 H W"]:
    """:func:`apply_colour_jitter` of ``draws[b]`` to every group ``images[b]`` at once (float images in [0, 1]).

    For each of the four positions of the drawn orders, each operation runs once, on the groups that drew it at that
    position, with their factors: at most 16 operations instead of 4 per group. Equal to the per-group reference up
    to float rounding (the blends multiply by a tensor instead of torchvision's scalar ``alpha``), see
    ``tests/methods/test_bts_model.py``.

    Raises:
        ValueError: ``images`` is not ``[B, V, 3, H, W]`` with one draw per group.
    """
    if images.ndim != 5 or images.shape[2] != 3 or images.shape[0] != len(draws):
        raise ValueError(f"expected images [B, V, 3, H, W] and B draws, got {tuple(images.shape)} and {len(draws)}")
    if _rgb_to_hsv is None or _hsv_to_rgb is None:
        return apply_colour_jitter_groups(images, draws)
    batch = images.shape[0]
    factors = torch.tensor([[d.brightness, d.contrast, d.saturation, d.hue] for d in draws], dtype=images.dtype)
    orders = torch.tensor([d.order for d in draws])  # [B, 4], host
    # Which groups run which operation at which position, on the host; one upload of all index lists and factors.
    selections = [
        (operation, (orders[:, position] == operation).nonzero().flatten())
        for position in range(4)
        for operation in range(4)
    ]
    selections = [(operation, groups) for operation, groups in selections if groups.numel() > 0]
    indices = torch.cat([groups for _, groups in selections])
    gathered = factors[indices, torch.cat([torch.full_like(groups, op) for op, groups in selections])]
    # float64 carries the indices exactly whatever the images' dtype
    uploaded = torch.cat([indices.double(), gathered.double()]).to(images.device, non_blocking=True)
    device_indices, device_factors = uploaded[: len(indices)].long(), uploaded[len(indices) :].to(images.dtype)
    original, start = images, 0
    for operation, groups in selections:
        end = start + groups.numel()
        factor = device_factors[start:end].view(-1, 1, 1, 1, 1)
        if groups.numel() == batch:  # every group drew this operation here (``groups`` is 0..B-1 in order)
            images = _OPERATIONS[operation](images, factor)
        else:
            index = device_indices[start:end]
            if images is original:  # the caller's tensor stays as it was
                images = images.clone()
            # in place: an out-of-place index_copy copied the whole batch (~190 MB at BTS's shapes) per selection
            images.index_copy_(0, index, _OPERATIONS[operation](images.index_select(0, index), factor))
        start = end
    return images
