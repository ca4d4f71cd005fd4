"""Query a trained bts-density model from one image: density at 3D points, depth maps, dataset sources.

The small API that occupancy evaluation, bird's-eye views and scripts build on::

    source = source_from_dataset(pipeline, "test", image_index)      # or encode_source(model, image, K, c2w)
    sigma = density_in_camera(pipeline.model, source, points_cam)     # points in the source's OpenCV frame
    z = depth_map(pipeline.model, source)                             # [H, W] z-depth, metres

Frames and units follow docs/conventions.md: OpenCV camera axes (x right, y down, +z forward), metres for
KITTI-360, intrinsics in nerfstudio pixel units.
"""

from typing import Literal, Optional, Tuple, Union, overload

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from bts_studio.methods.bts.model import BTSModel
from bts_studio.methods.bts.sources import SourceView
from bts_studio.methods.common.cameras import opencv_to_cameras

__all__ = [
    "SourceView",
    "encode_source",
    "resize_to",
    "training_image_size",
    "density_in_camera",
    "depth_map",
    "source_from_dataset",
    "source_camera",
]

DENSITY_CHUNK = 1 << 20
"""Points per density query (bounds memory for dense grids)."""


def training_image_size(model: BTSModel) -> Optional[Tuple[int, int]]:
    """``(height, width)`` of the images the model was trained on (the dataparser's ``target_size``), if known."""
    size = (model.kwargs.get("metadata") or {}).get("target_size")
    return (int(size[0]), int(size[1])) if size is not None else None


def resize_to(
    image: Float[Tensor, "3 H W"], K: Float[Tensor, "3 3"], size: Tuple[int, int]
) -> Tuple[Float[Tensor, "3 h w"], Float[Tensor, "3 3"]]:
    """Resize ``image`` to ``size = (h, w)`` and scale pixel ``K`` per axis, as BTS's data loading does.

    BTS resizes KITTI-360 frames with ``cv2.resize(..., INTER_LINEAR)`` (bilinear, no anti-aliasing; torch's
    ``bilinear`` with ``align_corners=False`` uses the same pixel-centre grid) and scales fx, cx by ``w / W`` and
    fy, cy by ``h / H`` (nerfstudio pixel units, where the image spans [0, W]).
    """
    height, width = image.shape[-2:]
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    scale = torch.tensor([size[1] / width, size[0] / height, 1.0], dtype=K.dtype, device=K.device)
    return resized, K * scale[:, None]


def encode_source(
    model: BTSModel,
    image: Float[Tensor, "3 H W"],
    K: Float[Tensor, "3 3"],
    c2w_opencv: Float[Tensor, "4 4"],
    resize: bool = True,
) -> SourceView:
    """Encode an image in [0, 1] with pixel intrinsics ``K`` and OpenCV camera-to-world ``c2w_opencv``.

    The density field depends on the image resolution (feature-map size, receptive field), so an image of
    another size than the model's training images is resized to the training size with ``K`` scaled
    (:func:`resize_to`, BTS's own rule); the returned source, and so ``depth_map``, is at the training size.
    With ``resize=False`` such an image is refused.

    Raises:
        ValueError: ``resize=False`` and the image is not at the training size.
    """
    size = training_image_size(model)
    if size is not None and tuple(image.shape[-2:]) != size:
        if not resize:
            raise ValueError(
                f"image is {image.shape[-1]}x{image.shape[-2]} (WxH) but the model was trained on {size[1]}x{size[0]} "
                "images; its depths depend on the resolution. Pass resize=True (resizes and scales K, as BTS does)."
            )
        image, K = resize_to(image, K, size)
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
