"""The typed training batch of DVR: ``B`` images (each with its object's encoder input view) x ``R`` pixels.

Rays of the nerfstudio ``RayBundle`` that goes with a batch are ordered image-major: rays
``[b * R, (b + 1) * R)`` belong to image ``b``. The pipeline encodes ``input_images`` and hands each ray its
image's latent code through ``RayBundle.metadata["latent_code"]``; the losses read targets from here.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


@dataclass
class DVRBatch:
    """Supervision of ``B`` images x ``R`` pixels, plus the encoder input view of each image's object."""

    rgb: Float[Tensor, "B R 3"]
    """Target colours in [0, 1]."""
    mask: Bool[Tensor, "B R"]
    """Object masks (True on the object)."""
    depth: Optional[Float[Tensor, "B R"]]
    """Camera z-depth in object units, ``inf`` on background / unknown; None when the data has no depth."""
    image_indices: Int[Tensor, " B"]
    """Index of each supervision image in its dataset."""
    object_indices: Int[Tensor, " B"]
    """Object (instance) of each image."""
    input_images: Optional[Float[Tensor, "B 3 S S"]] = None
    """Encoder input view of each image's object in [0, 1] (None for an unconditioned, multi-view model)."""

    def __post_init__(self) -> None:
        b, r = self.mask.shape
        assert self.rgb.shape == (b, r, 3), f"rgb must be [{b}, {r}, 3], got {tuple(self.rgb.shape)}"
        assert self.mask.dtype == torch.bool, "mask must be boolean"
        assert self.depth is None or self.depth.shape == (b, r), f"depth must be [{b}, {r}]"
        assert self.image_indices.shape == (b,) and self.object_indices.shape == (b,), "one index per image"
        if self.input_images is not None:
            assert self.input_images.dim() == 4 and self.input_images.shape[:2] == (
                b,
                3,
            ), f"input_images must be [{b}, 3, S, S], got {tuple(self.input_images.shape)}"

    @property
    def num_images(self) -> int:
        return int(self.mask.shape[0])

    @property
    def rays_per_image(self) -> int:
        return int(self.mask.shape[1])
