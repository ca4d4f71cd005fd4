"""What a BTS render is conditioned on: the encoded input view(s) and the views that colours are read from.

A batch holds ``B`` elements (frame groups in training, one source image at inference); the rays rendered with it
lead with that dimension (``BTSModel.render_rays``: ``[B, ...]``). Poses are world-to-camera in OpenCV axes and
intrinsics are in nerfstudio pixel units (docs/conventions.md).
"""

from dataclasses import dataclass, replace
from typing import Optional

import torch
from jaxtyping import Bool, Float
from torch import Tensor


@dataclass
class BTSConditioning:
    """Input-view features plus colour views for one batch of rays."""

    features: Float[Tensor, "B C H W"]
    """Encoder output of each element's input image (pixel-aligned with it)."""
    source_K: Float[Tensor, "B 3 3"]
    """Input-view intrinsics (nerfstudio pixels, for the feature-map size)."""
    source_w2c: Float[Tensor, "B 3 4"]
    """Input-view world-to-camera, OpenCV axes."""
    colour_images: Float[Tensor, "B V 3 H W"]
    """Images that sample colours are read from (BTS's render frames; at inference the input image)."""
    colour_K: Float[Tensor, "B V 3 3"]
    colour_w2c: Float[Tensor, "B V 3 4"]
    colour_missing: Optional[Bool[Tensor, "B V"]] = None
    """Colour views a frame group lacks; all their samples count as invalid."""
    with_loss_outputs: bool = False
    """Also return per-view colours and invalid masses (training and eval losses need them)."""

    def __post_init__(self) -> None:
        b = self.features.shape[0]
        assert self.features.dim() == 4, f"features must be [B, C, H, W], got {tuple(self.features.shape)}"
        assert self.source_K.shape == (b, 3, 3), f"source_K {tuple(self.source_K.shape)}"
        assert (
            self.source_w2c.shape[0] == b and self.source_w2c.shape[-1] == 4
        ), f"source_w2c {tuple(self.source_w2c.shape)}"
        assert self.colour_images.dim() == 5 and self.colour_images.shape[:3] == (
            b,
            self.num_views,
            3,
        ), f"colour_images {tuple(self.colour_images.shape)}"
        assert self.colour_K.shape == (b, self.num_views, 3, 3), f"colour_K {tuple(self.colour_K.shape)}"
        assert self.colour_w2c.shape[:2] == (b, self.num_views), f"colour_w2c {tuple(self.colour_w2c.shape)}"

    @property
    def batch_size(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.colour_images.shape[1])

    def detached(self) -> "BTSConditioning":
        """A copy whose features carry no autograd history (for caching)."""
        return replace(self, features=self.features.detach())

    def to(self, device: torch.device | str) -> "BTSConditioning":
        moved = {
            name: getattr(self, name).to(device)
            for name in ("features", "source_K", "source_w2c", "colour_images", "colour_K", "colour_w2c")
        }
        missing = None if self.colour_missing is None else self.colour_missing.to(device)
        return replace(self, colour_missing=missing, **moved)
