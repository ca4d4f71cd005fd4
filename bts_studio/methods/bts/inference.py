"""Query a trained bts-density model from one image: density at 3D points, depth maps, dataset sources.

The small API that occupancy evaluation, bird's-eye views and scripts build on::

    source = source_from_dataset(pipeline, "test", image_index)      # or encode_source(model, image, K, c2w)
    sigma = density_in_camera(pipeline.model, source, points_cam)     # points in the source's OpenCV frame
    z = depth_map(pipeline.model, source)                             # [H, W] z-depth, metres

Frames and units follow docs/conventions.md: OpenCV camera axes (x right, y down, +z forward), metres for
KITTI-360, intrinsics in nerfstudio pixel units.
"""

from typing import Literal, Tuple, Union, overload

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from bts_studio.methods.bts.model import BTSModel
from bts_studio.methods.bts.sources import SourceView
from bts_studio.methods.common.cameras import opencv_to_cameras

__all__ = ["SourceView", "encode_source", "density_in_camera", "depth_map", "source_from_dataset", "source_camera"]

DENSITY_CHUNK = 1 << 20
"""Points per density query (bounds memory for dense grids)."""


def encode_source(
    model: BTSModel, image: Float[Tensor, "3 H W"], K: Float[Tensor, "3 3"], c2w_opencv: Float[Tensor, "4 4"]
) -> SourceView:
    """Encode an image in [0, 1] with pixel intrinsics ``K`` and OpenCV camera-to-world ``c2w_opencv``."""
    return model.encode_view(image, K, c2w_opencv)


@overload
def density_in_camera(
    model: BTSModel, source: SourceView, points_cam_opencv: Tensor, return_outside: Literal[False] = False
) -> Tensor: ...


@overload
def density_in_camera(
    model: BTSModel, source: SourceView, points_cam_opencv: Tensor, return_outside: Literal[True]
) -> Tuple[Tensor, Tensor]: ...


@torch.no_grad()
def density_in_camera(
    model: BTSModel, source: SourceView, points_cam_opencv: Float[Tensor, "N 3"], return_outside: bool = False
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Density ``sigma >= 0`` ``[N]`` at points ``[N, 3]`` given in the source camera's OpenCV frame (metres).

    Points outside the source frustum still get a density (from border features, as BTS); with
    ``return_outside`` the frustum mask comes back too.
    """
    assert (
        points_cam_opencv.dim() == 2 and points_cam_opencv.shape[-1] == 3
    ), f"points must be [N, 3], got {tuple(points_cam_opencv.shape)}"
    device = source.features.device
    identity = torch.eye(4, device=device)[None, :3]  # the points already are in the camera frame
    sigmas, outsides = [], []
    for chunk in points_cam_opencv.to(device, torch.float32).split(DENSITY_CHUNK):
        sigma, outside = model.net.density(chunk[None], source.features[None], source.K[None], identity)
        sigmas.append(sigma[0])
        outsides.append(outside[0])
    sigma = torch.cat(sigmas) if sigmas else torch.zeros(0, device=device)
    if return_outside:
        return sigma, (torch.cat(outsides) if outsides else torch.zeros(0, dtype=torch.bool, device=device))
    return sigma


def source_camera(source: SourceView) -> Cameras:
    """The nerfstudio camera of a source view (OpenGL pose, pixel intrinsics)."""
    return opencv_to_cameras(
        source.K.float().cpu()[None], source.c2w[:3].float().cpu()[None], width=source.width, height=source.height
    )


@torch.no_grad()
def depth_map(model: BTSModel, source: SourceView) -> Float[Tensor, "H W"]:
    """Rendered z-depth of the source's own view (metres), as BTS evaluates depth."""
    camera = source_camera(source).to(source.features.device)
    return model.render_camera(camera, source)["z_depth"][..., 0]


def source_from_dataset(pipeline, split: Literal["train", "test"], image_index: int) -> SourceView:
    """Encoded image ``image_index`` of the pipeline's train dataset or eval (test) dataset."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return pipeline.model.source_view(split, image_index)
