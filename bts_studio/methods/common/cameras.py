"""nerfstudio ``Cameras`` <-> OpenCV pinhole matrices, the form ``bts_studio.core`` projects with.

nerfstudio stores OpenGL camera-to-world poses ``[N, 3, 4]`` and per-camera ``fx, fy, cx, cy`` in pixel units
(pixel (0, 0) covers [0, 1]^2, docs/conventions.md "Pixels"). ``core.geometry`` takes pixel ``K`` and OpenCV
poses. Only pinhole cameras convert; a fisheye camera's model is not a matrix.
"""

from typing import NamedTuple, Optional, Tuple

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.model_components.ray_generators import RayGenerator
from torch import Tensor, nn

from bts_studio.core.geometry import (
    intrinsics_matrix,
    invert_pose,
    opencv_to_opengl,
    pinhole_pixel_rays,
    pinhole_rays,
    to_homogeneous_pose,
)

__all__ = [
    "CameraRays",
    "PixelRayGenerator",
    "camera_header",
    "camera_rays",
    "cameras_to_opencv",
    "cameras_to_opencv_w2c",
    "opencv_to_cameras",
]


def _flat(cameras: Cameras) -> Cameras:
    return cameras.flatten() if cameras.shape else cameras.reshape((1,))


def cameras_to_opencv(cameras: Cameras) -> Tuple[Float[Tensor, "N 3 3"], Float[Tensor, "N 4 4"]]:
    """Pixel intrinsics ``K [N, 3, 3]`` and OpenCV camera-to-world poses ``[N, 4, 4]`` of ``Cameras`` (any shape,
    flattened to ``N``)."""
    cameras = _flat(cameras)
    K = intrinsics_matrix(cameras.fx[..., 0], cameras.fy[..., 0], cameras.cx[..., 0], cameras.cy[..., 0])
    c2w = to_homogeneous_pose(opencv_to_opengl(cameras.camera_to_worlds))
    return K, c2w


def cameras_to_opencv_w2c(cameras: Cameras) -> Tuple[Float[Tensor, "N 3 3"], Float[Tensor, "N 3 4"]]:
    """Pixel intrinsics ``K [N, 3, 3]`` and OpenCV world-to-camera poses ``[N, 3, 4]`` (what ``project_points``
    takes) of ``Cameras`` (any shape, flattened to ``N``)."""
    K, c2w = cameras_to_opencv(cameras)
    return K, invert_pose(c2w)[:, :3]


def opencv_to_cameras(
    K: Float[Tensor, "N 3 3"],
    c2w_opencv: Float[Tensor, "N _ 4"],  # 3 or 4 rows (asserted below)
    width: int,
    height: int,
) -> Cameras:
    """Perspective nerfstudio ``Cameras [N]`` from pixel ``K`` and OpenCV camera-to-world poses (``[N, 3|4, 4]``).

    The inverse of :func:`cameras_to_opencv` for pinhole cameras of one image size.
    """
    assert K.ndim == 3 and K.shape[-2:] == (3, 3), f"K must be [N, 3, 3], got {tuple(K.shape)}"
    assert c2w_opencv.ndim == 3 and c2w_opencv.shape[-2:] in (
        (3, 4),
        (4, 4),
    ), f"c2w must be [N, 3|4, 4], got {c2w_opencv.shape}"
    assert len(K) == len(c2w_opencv), f"{len(K)} intrinsics but {len(c2w_opencv)} poses"
    return Cameras(
        camera_to_worlds=opencv_to_opengl(c2w_opencv[:, :3]),
        fx=K[:, 0, 0:1],
        fy=K[:, 1, 1:2],
        cx=K[:, 0, 2:3],
        cy=K[:, 1, 2:3],
        width=torch.full((len(K), 1), int(width), dtype=torch.long),
        height=torch.full((len(K), 1), int(height), dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
    )


class CameraHeader(NamedTuple):
    """What a full-frame render of one camera must know on the host: its image size and how to make its rays."""

    height: int
    width: int
    camera_type: int
    """``CameraType`` value."""
    distorted: bool
    """Any non-zero ``distortion_params`` (nerfstudio undistorts only then)."""


def camera_header(camera: Cameras) -> CameraHeader:
    """Image size, type and distortion flag of a one-camera ``Cameras``, read in ONE device-to-host copy.

    The output shape of a render depends on the size, so a camera living on the GPU (the viewer's and ns-render's
    do) costs this one sync per render; nerfstudio's ``generate_rays`` makes ~20 (issue 17, docs/benchmarks.md).
    """
    assert camera.shape.numel() == 1, f"expected one camera, got Cameras of shape {tuple(camera.shape)}"
    fields = [camera.height, camera.width, camera.camera_type]
    if camera.distortion_params is not None:
        fields.append((camera.distortion_params != 0).any(dim=-1, keepdim=True))
    values = torch.cat([field.reshape(1).long() for field in fields]).tolist()
    return CameraHeader(values[0], values[1], values[2], bool(values[3]) if len(values) > 3 else False)


class CameraRays(NamedTuple):
    """A camera's full frame of rays, ``[H, W, C]`` on the camera's device."""

    origins: Float[Tensor, "H W 3"]
    directions: Float[Tensor, "H W 3"]
    """Unit directions."""
    directions_norm: Float[Tensor, "H W 1"]
    """nerfstudio's ``metadata["directions_norm"]``: z-depth = distance / directions_norm."""


def camera_rays(camera: Cameras, obb_box: Optional[OrientedBox] = None) -> CameraRays:
    """Rays through every pixel centre of a one-camera ``Cameras``, bit-identical to
    ``camera.generate_rays(camera_indices=0, keep_shape=True)``.

    An undistorted pinhole camera (every dataset here) goes through ``core.geometry.pinhole_rays`` on the camera's
    device with one host sync (:func:`camera_header`); any other camera (ns-render's fisheye or equirectangular
    modes, distortion) through nerfstudio's ``generate_rays`` (``obb_box`` is only passed on to it: it sets near
    and far bounds, which the callers here do not read).
    """
    header = camera_header(camera)
    if header.camera_type != CameraType.PERSPECTIVE.value or header.distorted:
        bundle = camera.generate_rays(camera_indices=0, keep_shape=True, obb_box=obb_box)
        assert bundle.origins.ndim == 3, f"expected an [H, W] bundle, got {bundle.shape}"
        return CameraRays(bundle.origins, bundle.directions, bundle.metadata["directions_norm"])
    intrinsics = [getattr(camera, name).reshape(-1)[0] for name in ("fx", "fy", "cx", "cy")]
    c2w = camera.camera_to_worlds.reshape(3, 4)
    return CameraRays(*pinhole_rays(c2w, *intrinsics, header.height, header.width))


class PixelRayGenerator(nn.Module):
    """nerfstudio's ``RayGenerator`` (``(camera, row, col)`` indices -> ``RayBundle``) without host syncs for
    undistorted pinhole cameras: the same bundle, bit for bit (``core.geometry.pinhole_pixel_rays``).

    Whether every camera is an undistorted pinhole is read once here; nerfstudio's ``generate_rays`` reads the
    camera types back, assigns through boolean masks and copies a constant to the device on every call (6 host
    syncs per batch on a GPU, issue 13). Other cameras (fisheye, distortion) go through nerfstudio's generator.
    """

    def __init__(self, cameras: Cameras) -> None:
        super().__init__()
        assert cameras.ndim == 1, f"expected a flat Cameras [N], got shape {tuple(cameras.shape)}"
        self.cameras = cameras
        distorted = cameras.distortion_params is not None and bool((cameras.distortion_params != 0).any())
        perspective = bool((cameras.camera_type == CameraType.PERSPECTIVE.value).all())
        self.fallback = RayGenerator(cameras) if distorted or not perspective or cameras.times is not None else None

    def forward(self, ray_indices: Int[Tensor, "R 3"]) -> RayBundle:
        if self.fallback is not None:
            return self.fallback(ray_indices)
        assert ray_indices.dim() == 2 and ray_indices.shape[1] == 3, "ray indices must be [R, 3] (camera, row, col)"
        cameras = self.cameras
        camera, row, col = ray_indices.unbind(dim=-1)
        # nerfstudio's pixel coordinates: integer grid + 0.5 (Cameras.get_image_coords), exact in float32.
        y, x = row.to(cameras.fx.dtype) + 0.5, col.to(cameras.fx.dtype) + 0.5
        intrinsics = [getattr(cameras, name)[camera, 0] for name in ("fx", "fy", "cx", "cy")]
        origins, directions, norm, pixel_area = pinhole_pixel_rays(cameras.camera_to_worlds[camera], *intrinsics, x, y)
        metadata = {name: value[camera] for name, value in (cameras.metadata or {}).items()}
        metadata["directions_norm"] = norm.detach()
        return RayBundle(
            origins=origins,
            directions=directions,
            pixel_area=pixel_area,
            camera_indices=camera[:, None],
            metadata=metadata,
        )
