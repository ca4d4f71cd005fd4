"""A bts-density batch: ``G`` frame groups, each with ``P`` square patches of ``p x p`` rays.

The datamanager builds it (``BTSDataManager.next_train``), the model renders it and the loss reads it, and the
rays keep their ``[G, P, p, p]`` structure all the way: nothing downstream needs to know an order of flat rays.
Poses are world-to-camera in OpenCV axes, intrinsics in nerfstudio pixel units (docs/conventions.md).
"""

from dataclasses import dataclass
from typing import Optional

from jaxtyping import Bool, Float, Int
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor

__all__ = ["BTSBatch"]


@dataclass
class BTSBatch:
    """One training or evaluation batch of frame groups (BTS's patch sampling, ``BTSDataManager``)."""

    rays: RayBundle
    """Rays ``[G, P, p, p]``: patch ``(g, k)`` of group ``g``, row-major pixels of the patch."""
    image: Float[Tensor, "G P p p 3"]
    """Target colours in [0, 1] of every ray's pixel (in its loss frame)."""
    input_image: Float[Tensor, "G 3 H W"]
    """The input frame of each group (encoded by the model)."""
    input_K: Float[Tensor, "G 3 3"]
    input_w2c: Float[Tensor, "G 3 4"]
    render_images: Float[Tensor, "G V 3 H W"]
    """Render frames: sample colours are read from them."""
    render_K: Float[Tensor, "G V 3 3"]
    render_w2c: Float[Tensor, "G V 3 4"]
    render_missing: Optional[Bool[Tensor, "G V"]] = None
    """Render frames a group lacks or that repeat a loss frame; their samples count as invalid."""
    group_ids: Optional[Int[Tensor, " G"]] = None
    """Rows of the image store's frame groups (for tests and debugging)."""
    patch_pixels: Optional[Int[Tensor, "G P p p 2"]] = None
    """Integer (row, column) in its loss frame of every ray's pixel (the auto-mask reads the render frames there)."""

    def __post_init__(self) -> None:
        g, num_patches, p = self.image.shape[:3]
        assert self.image.shape == (g, num_patches, p, p, 3), f"image must be [G, P, p, p, 3], got {self.image.shape}"
        assert tuple(self.rays.shape) == (g, num_patches, p, p), f"rays {tuple(self.rays.shape)} vs image {g, p}"
        assert self.input_image.dim() == 4 and self.input_image.shape[:2] == (g, 3), f"{self.input_image.shape}"
        assert self.input_K.shape == (g, 3, 3) and self.input_w2c.shape == (g, 3, 4)
        v = self.render_images.shape[1]
        assert self.render_images.shape[:3] == (g, v, 3), f"render_images {tuple(self.render_images.shape)}"
        assert self.render_K.shape == (g, v, 3, 3) and self.render_w2c.shape == (g, v, 3, 4)
        assert self.render_missing is None or self.render_missing.shape == (g, v)
        pixels_shape = None if self.patch_pixels is None else tuple(self.patch_pixels.shape)
        assert pixels_shape in (
            None,
            (g, num_patches, p, p, 2),
        ), f"patch_pixels must be [G, P, p, p, 2]: {pixels_shape}"

    @property
    def num_groups(self) -> int:
        return int(self.image.shape[0])

    @property
    def num_patches(self) -> int:
        return int(self.image.shape[1])

    @property
    def patch_size(self) -> int:
        return int(self.image.shape[2])
