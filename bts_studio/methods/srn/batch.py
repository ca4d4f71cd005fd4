"""An srn training batch: ``U`` object instances, ``R`` rays each, kept as ``[instances, rays]``.

SRN predicts one scene function per instance, so the model evaluates each row of the batch with its own
hypernetwork output; the datamanager builds the rows (``SRNDataManager.next_train``) and nothing downstream
regroups the rays.
"""

from dataclasses import dataclass

from jaxtyping import Float, Int
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor

__all__ = ["SRNBatch"]


@dataclass
class SRNBatch:
    """Rays of ``U`` distinct instances, ``R`` per instance, with their target colours."""

    rays: RayBundle
    """Rays ``[U, R]``; row ``u`` shows instance ``instances[u]`` (also in ``rays.metadata["instance_idx"]``)."""
    image: Float[Tensor, "U R 3"]
    """Target colours in [0, 1]."""
    instances: Int[Tensor, " U"]
    """Training-instance index of each row (the latent code it uses)."""
    indices: Int[Tensor, "U R 3"]
    """``(image index, row, column)`` of every ray's pixel."""

    def __post_init__(self) -> None:
        u, r = self.image.shape[:2]
        assert self.image.shape == (u, r, 3), f"image must be [U, R, 3], got {tuple(self.image.shape)}"
        assert tuple(self.rays.shape) == (u, r), f"rays {tuple(self.rays.shape)} vs image {tuple(self.image.shape)}"
        assert self.instances.shape == (u,) and self.indices.shape == (u, r, 3)
