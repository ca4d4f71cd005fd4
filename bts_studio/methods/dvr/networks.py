"""DVR's networks: the occupancy + texture decoder and the ResNet-18 image encoder (classics.md C.1).

- :class:`DVRDecoder` (official ``im2mesh/dvr/models/decoder.py``, ``Decoder``): ``Linear(3, H)``, then
  ``num_blocks`` residual fully connected blocks with the latent code added through its own ``Linear(c, H)``
  before each, then ReLU and ``Linear(H, out_dim)``. Channel 0 is the occupancy logit, channels 1..3 the RGB
  logits (colour = sigmoid). No positional encoding: points live in the object's unit cube.
- :class:`ResnetBlockFC` (``im2mesh/layers.py``): ``x + fc_1(relu(fc_0(relu(x))))`` with ``fc_1`` zero-initialised.
- :class:`DVREncoder` (``im2mesh/encoder/conv.py``, ``Resnet18``): torchvision ResNet-18 (the shared backbone,
  ImageNet weights loaded offline), global average pooling, ``Linear(512, c_dim)``; inputs in [0, 1]
  normalised with ImageNet statistics inside.
"""

from pathlib import Path
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor, nn

from bts_studio.methods.common.backbone import RESNET_ENCODER_CHANNELS, ResnetEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResnetBlockFC(nn.Module):
    """Residual fully connected block of Occupancy Networks / DVR (width kept)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc_0 = nn.Linear(width, width)
        self.fc_1 = nn.Linear(width, width)
        nn.init.zeros_(self.fc_1.weight)  # each block starts as the identity, as the official code

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc_1(torch.relu(self.fc_0(torch.relu(x))))


class DVRDecoder(nn.Module):
    """Occupancy logit + RGB of points ``[N, S, 3]`` given one latent code per ray ``[N, C]`` (or none)."""

    def __init__(self, latent_dim: int, hidden: int = 512, num_blocks: int = 5, out_dim: int = 4) -> None:
        super().__init__()
        assert out_dim in (1, 4), "out_dim 1 (shape only, DVR's ours_depth) or 4 (occupancy + RGB)"
        self.latent_dim = latent_dim
        self.out_dim = out_dim
        self.fc_p = nn.Linear(3, hidden)
        self.fc_c = nn.ModuleList([nn.Linear(latent_dim, hidden) for _ in range(num_blocks)]) if latent_dim else None
        self.blocks = nn.ModuleList([ResnetBlockFC(hidden) for _ in range(num_blocks)])
        self.fc_out = nn.Linear(hidden, out_dim)

    def forward(
        self, points: Float[Tensor, "N S 3"], latent: Optional[Float[Tensor, "N C"]] = None
    ) -> Float[Tensor, "N S O"]:
        assert points.dim() == 3 and points.shape[-1] == 3, f"points must be [N, S, 3], got {tuple(points.shape)}"
        net = self.fc_p(points)
        if self.fc_c is not None:
            assert latent is not None and latent.shape == (points.shape[0], self.latent_dim), (
                f"latent must be [{points.shape[0]}, {self.latent_dim}], got "
                f"{None if latent is None else tuple(latent.shape)}"
            )
        for index, block in enumerate(self.blocks):
            if self.fc_c is not None:
                # The code is projected once per ray and broadcast over its samples.
                net = net + self.fc_c[index](latent)[:, None]
            net = block(net)
        return self.fc_out(torch.relu(net))

    def occupancy(self, points: Float[Tensor, "N S 3"], latent: Optional[Float[Tensor, "N C"]]) -> Float[Tensor, "N S"]:
        """Occupancy logits (the :data:`~bts_studio.core.root_finding.OccupancyField` interface)."""
        return self(points, latent)[..., 0]

    def colour(self, points: Float[Tensor, "N S 3"], latent: Optional[Float[Tensor, "N C"]]) -> Float[Tensor, "N S 3"]:
        """RGB in [0, 1] (sigmoid of channels 1..3); grey for a shape-only decoder."""
        if self.out_dim == 1:
            return torch.full((*points.shape[:-1], 3), 0.5, device=points.device, dtype=points.dtype)
        return torch.sigmoid(self(points, latent)[..., 1:4])


class DVREncoder(nn.Module):
    """ResNet-18 (``methods/common/backbone.py``) to a global code ``[B, c_dim]``; images ``[B, 3, H, W]`` in [0, 1]."""

    def __init__(self, latent_dim: int = 256) -> None:
        super().__init__()
        self.backbone = ResnetEncoder(18)  # identity normalisation there; ImageNet statistics applied here
        self.fc = nn.Linear(RESNET_ENCODER_CHANNELS[18][-1], latent_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B C"]:
        assert images.dim() == 4 and images.shape[1] == 3, f"images must be [B, 3, H, W], got {tuple(images.shape)}"
        deepest = self.backbone((images - self.mean) / self.std)[-1]
        return self.fc(deepest.mean(dim=(2, 3)))  # global average pooling, as torchvision's ResNet

    def load_imagenet_weights(self, path: Optional[Path]) -> Optional[Path]:
        """torchvision's ImageNet ResNet-18 from ``path`` or the torch hub cache; never downloads (warns if absent)."""
        return self.backbone.load_imagenet_weights(path, method="dvr")
