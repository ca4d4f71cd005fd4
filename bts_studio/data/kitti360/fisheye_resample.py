"""KITTI-360 fisheye images resampled to virtual pinhole cameras, as Behind the Scenes does.

nerfstudio has no MEI camera model, so each fisheye image (``image_02``, ``image_03``) becomes the image of a
virtual pinhole camera that shares the fisheye's centre, has exactly the perspective cameras' intrinsics
and target size, and is pitched down (BTS: 15 degrees, ``fisheye_rotation: [0, -15]``). BTS's
``FisheyeToPinholeSampler`` builds it per output pixel: unproject with the perspective K, rotate into the
fisheye frame, project with the MEI model, sample bilinearly (no anti-aliasing, black outside the image).

BTS's rotation is scipy's extrinsic Euler ``"xy"`` with ``x = pitch`` and ``y = yaw`` (``R = R_y R_x``),
mapping virtual-camera directions into the fisheye frame; for the right fisheye the yaw is mirrored
(``y = -yaw``), so with BTS's zero yaw both fisheyes get the same rotation. The virtual camera's
camera-to-world pose is the fisheye's pose times this rotation.

Differences from BTS, all below a pixel: BTS places its output pixel centres at ``linspace(-1, 1, W)``
and maps fisheye coordinates with ``grid_sample(align_corners=True)`` from a calibration normalised by
``W`` rather than ``W - 1``; here both sides use exact pixel centres (docs/conventions.md, "Pixels"), so
the cached image is the exact image of the nerfstudio camera the dataparser returns. BTS also ignores
the tangential terms ``p1, p2``; :func:`bts_studio.core.fisheye.mei_project` applies them.
"""

import math
from typing import Tuple

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from torch import Tensor

from bts_studio.core.fisheye import MeiParams, mei_project


def virtual_camera_rotation(pitch_down_deg: float, yaw_deg: float, mirror: bool) -> Float[np.ndarray, "3 3"]:
    """Rotation from the virtual pinhole camera frame to the fisheye frame (OpenCV axes).

    Args:
        pitch_down_deg: how far the virtual camera looks below the fisheye's optical axis (BTS: 15).
        yaw_deg: BTS's first ``fisheye_rotation`` angle, about the camera's y axis (BTS: 0).
        mirror: True for the right fisheye (``image_03``), whose yaw BTS mirrors.

    Returns:
        ``R`` with ``d_fisheye = R @ d_virtual``.
    """
    pitch = math.radians(-pitch_down_deg)
    yaw = math.radians(-yaw_deg if mirror else yaw_deg)
    rotation_x = np.array(
        [[1.0, 0.0, 0.0], [0.0, math.cos(pitch), -math.sin(pitch)], [0.0, math.sin(pitch), math.cos(pitch)]]
    )
    rotation_y = np.array([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
    return rotation_y @ rotation_x


def fisheye_folder_name(height: int, width: int, pitch_down_deg: float, yaw_deg: float) -> str:
    """BTS's preprocessed fisheye folder name, e.g. ``data_192x640_0x-15`` (size, then yaw x pitch angles)."""
    return f"data_{height}x{width}_{yaw_deg:g}x{-pitch_down_deg:g}"


def pinhole_to_fisheye_coordinates(
    K: Float[Tensor, "3 3"], height: int, width: int, rotation: Float[Tensor, "3 3"], params: MeiParams
) -> Tuple[Float[Tensor, "H W 2"], Bool[Tensor, "H W"]]:
    """Where each virtual pinhole pixel centre lands in the fisheye image.

    Args:
        K: virtual pinhole intrinsics, nerfstudio pixel units.
        height: virtual image height.
        width: virtual image width.
        rotation: virtual-to-fisheye rotation (:func:`virtual_camera_rotation`).
        params: fisheye intrinsics, nerfstudio pixel units.

    Returns:
        Continuous fisheye pixel coordinates (nerfstudio units) and whether the ray hits the fisheye image.
    """
    assert K.shape == (3, 3) and rotation.shape == (3, 3), f"K {tuple(K.shape)}, rotation {tuple(rotation.shape)}"
    K, rotation = K.double(), rotation.double()
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij"
    )
    pixels = torch.stack([columns, rows, torch.ones_like(rows)], dim=-1)
    directions = pixels @ torch.linalg.inv(K).T @ rotation.T
    return mei_project(directions, params)


class FisheyeToPinhole:
    """Resample fisheye images of one camera to one virtual pinhole camera (precomputed sampling map).

    Args:
        K: virtual pinhole intrinsics, nerfstudio pixel units.
        height: virtual image height.
        width: virtual image width.
        rotation: virtual-to-fisheye rotation.
        params: fisheye intrinsics, nerfstudio pixel units.
    """

    def __init__(self, K: Tensor, height: int, width: int, rotation: Tensor, params: MeiParams):
        self.params = params
        uv, valid = pinhole_to_fisheye_coordinates(K, height, width, rotation, params)
        # cv2.remap wants OpenCV pixel coordinates (pixel centres at integers); off-image rays sample black.
        opencv_uv = torch.where(valid[..., None], uv - 0.5, torch.full_like(uv, -2.0)).float().numpy()
        self.map_x = np.ascontiguousarray(opencv_uv[..., 0])
        self.map_y = np.ascontiguousarray(opencv_uv[..., 1])
        self.valid = valid.numpy()

    def __call__(self, image: UInt8[np.ndarray, "H_f W_f 3"]) -> UInt8[np.ndarray, "H W 3"]:
        """Resample one fisheye image (RGB uint8, the calibration's size)."""
        import cv2

        assert image.shape[:2] == (
            self.params.height,
            self.params.width,
        ), f"fisheye image is {image.shape[:2]}, calibration says {(self.params.height, self.params.width)}"
        return cv2.remap(
            image,
            self.map_x,
            self.map_y,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
