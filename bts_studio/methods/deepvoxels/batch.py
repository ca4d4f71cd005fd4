"""The typed training batch of DeepVoxels: one lifted source view and the target views rendered from the grid.

DeepVoxels' ``NovelViewTriplets`` (``dataio.py``): the source is one of the 4 nearest training views of target 0 by
viewing direction, target 1 is a random training view. Images are ``[0, 1]`` RGB, channels first; poses are OpenCV
camera-to-world / world-to-camera and intrinsics are in nerfstudio pixel units of the images (docs/conventions.md).
"""

from dataclasses import dataclass, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class DeepVoxelsTriplet:
    """One training sample: ``T`` targets (2 in DeepVoxels) and the source view whose features are lifted."""

    source_image: Float[Tensor, "1 3 H W"]
    source_K: Float[Tensor, "1 3 3"]
    source_w2c: Float[Tensor, "1 3 4"]
    """World-to-camera of the source view, OpenCV axes."""
    target_images: Float[Tensor, "T 3 H W"]
    target_K: Float[Tensor, "T 3 3"]
    target_c2w: Float[Tensor, "T 3 4"]
    """Camera-to-world of the targets, OpenCV axes."""
    source_index: int
    target_indices: Int[Tensor, " T"]
    """Training-image indices (for logging and tests)."""

    def __post_init__(self) -> None:
        height, width = self.source_image.shape[-2:]
        t = self.target_images.shape[0]
        assert self.source_image.shape == (1, 3, height, width), f"source_image {tuple(self.source_image.shape)}"
        assert self.source_K.shape == (1, 3, 3), f"source_K {tuple(self.source_K.shape)}"
        assert self.source_w2c.shape == (1, 3, 4), f"source_w2c {tuple(self.source_w2c.shape)}"
        assert self.target_images.shape == (t, 3, height, width), f"target_images {tuple(self.target_images.shape)}"
        assert self.target_K.shape == (t, 3, 3), f"target_K {tuple(self.target_K.shape)}"
        assert self.target_c2w.shape == (t, 3, 4), f"target_c2w {tuple(self.target_c2w.shape)}"
        assert self.target_indices.shape == (t,), f"target_indices {tuple(self.target_indices.shape)}"

    @property
    def num_targets(self) -> int:
        return int(self.target_images.shape[0])

    def to(self, device: torch.device | str) -> "DeepVoxelsTriplet":
        names = ("source_image", "source_K", "source_w2c", "target_images", "target_K", "target_c2w")
        return replace(self, **{name: getattr(self, name).to(device) for name in names})
