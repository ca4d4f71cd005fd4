"""BTS's colour augmentation: one ColorJitter draw per frame group, applied to every image of the group.

Official: ``datasets/kitti_360/kitti_360_dataset.py`` draws ``ColorJitter.get_params(brightness=(0.8, 1.2),
contrast=(0.8, 1.2), saturation=(0.8, 1.2), hue=(-0.1, 0.1))`` once per sample and applies the four adjustments in
the drawn random order to all 8 frames (``utils/augmentation.py``). The loss, the colour lookups and the encoder
all see the jittered images. Runs on whatever device the images are on.
"""

from dataclasses import dataclass
from typing import List, Tuple

import torch
import torchvision.transforms.v2.functional as TF
from jaxtyping import Float
from torch import Tensor


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
