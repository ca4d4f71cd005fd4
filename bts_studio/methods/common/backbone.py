"""A torchvision ResNet as an image backbone, with offline loading of torchvision's ImageNet weights.

BTS (Monodepth2 encoder) and DVR (ResNet-18 image encoder) both start from torchvision's ImageNet ResNets. Nothing
here downloads: weights come from a given ``.pth`` file or torchvision's torch hub cache, else the backbone trains
from scratch with one warning.
"""

import warnings
from pathlib import Path
from typing import List, Optional

import torch
import torchvision
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["IMAGENET_WEIGHT_FILES", "RESNET_ENCODER_CHANNELS", "ResnetEncoder", "load_imagenet_weights"]

RESNET_ENCODER_CHANNELS = {18: (64, 64, 128, 256, 512), 34: (64, 64, 128, 256, 512), 50: (64, 256, 512, 1024, 2048)}
"""Channels of the five skip features (1/2, 1/4, 1/8, 1/16, 1/32 scale) per ResNet depth."""

IMAGENET_WEIGHT_FILES = {
    18: "resnet18-f37072fd.pth",
    34: "resnet34-b627a593.pth",
    50: "resnet50-0676ba61.pth",
}
"""torchvision's IMAGENET1K_V1 files (what ``pretrained=True`` gave the original code), as named in the hub cache."""


class ResnetEncoder(nn.Module):
    """A torchvision ResNet returning the five skip features (1/2, 1/4, 1/8, 1/16, 1/32).

    Args:
        num_layers: ResNet depth (18, 34 or 50).
        mean, std: the input normalisation ``(image - mean) / std`` for images in [0, 1] (method-specific: BTS uses
            Monodepth2's 0.45 / 0.225).

    The torchvision network is the attribute ``encoder`` (checkpoint keys ``encoder.*``, as Monodepth2's
    ``ResnetEncoder``); its classifier ``fc`` is removed.
    """

    def __init__(self, num_layers: int, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if num_layers not in RESNET_ENCODER_CHANNELS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_ENCODER_CHANNELS)}, got {num_layers}")
        self.num_layers = num_layers
        self.channels = RESNET_ENCODER_CHANNELS[num_layers]
        self.mean, self.std = mean, std
        self.encoder = getattr(torchvision.models, f"resnet{num_layers}")(weights=None)
        del self.encoder.fc  # the classifier is unused; keeping it would only add unused parameters

    def forward(self, image: Float[Tensor, "B 3 H W"]) -> List[Tensor]:
        net = self.encoder
        x = (image - self.mean) / self.std
        features = [net.relu(net.bn1(net.conv1(x)))]
        features.append(net.layer1(net.maxpool(features[-1])))
        features.append(net.layer2(features[-1]))
        features.append(net.layer3(features[-1]))
        features.append(net.layer4(features[-1]))
        return features

    def load_imagenet_weights(
        self, path: Optional[Path], search_torch_hub: bool = True, method: str = "bts-studio"
    ) -> Optional[Path]:
        """See :func:`load_imagenet_weights`."""
        return load_imagenet_weights(self.encoder, self.num_layers, path, search_torch_hub, method)


def load_imagenet_weights(
    resnet: nn.Module, num_layers: int, path: Optional[Path], search_torch_hub: bool = True, method: str = "bts-studio"
) -> Optional[Path]:
    """Load torchvision ImageNet ResNet weights into ``resnet`` from ``path`` or the torch hub cache.

    Never downloads. A missing, corrupt or mismatching file is skipped; when nothing loads, one ``UserWarning``
    (naming ``method``, every place looked at and the file to provide) is raised and training goes on from scratch.
    The classifier (``fc.*``) is dropped.

    Returns:
        The file that was loaded, or None.
    """
    candidates: List[Path] = []
    if path is not None:
        candidates.append(Path(path).expanduser())
    if search_torch_hub:
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_WEIGHT_FILES[num_layers])
    problems = []
    for candidate in candidates:
        if not candidate.is_file():
            problems.append(f"{candidate} (not found)")
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            resnet.load_state_dict(state, strict=True)
        except Exception as error:  # a corrupt or wrong file must not stop training
            problems.append(f"{candidate} ({type(error).__name__}: {error})")
            continue
        return candidate
    warnings.warn(
        f"{method}: no ImageNet weights for ResNet-{num_layers}; training the encoder from scratch "
        f"(the original starts from ImageNet, so expect slower convergence). Looked at: {'; '.join(problems)}. "
        f"Set --pipeline.model.imagenet-weights PATH to torchvision's {IMAGENET_WEIGHT_FILES[num_layers]}.",
        stacklevel=3,
    )
    return None
