"""MEI (unified omnidirectional) fisheye camera model, as KITTI-360's ``image_02`` / ``image_03`` use it.

A camera-frame point (OpenCV axes: x right, y down, z forward) is first put on the unit sphere, then
projected from the point ``(0, 0, -xi)``, radially and tangentially distorted, and scaled:

    s = X / |X|;  m = (s_x, s_y) / (s_z + xi)
    m_d = m (1 + k1 r^2 + k2 r^4) + tangential(p1, p2),   r^2 = |m|^2
    u = gamma1 m_d,x + u0;   v = gamma2 m_d,y + v0

All rays pass through the camera centre, so the camera is central: a pixel's ray is a unit direction.
Pixel units follow docs/conventions.md ("Pixels"): ``u0, v0`` here are nerfstudio units, i.e. the OpenCV
calibration values + 0.5 (:meth:`MeiParams.from_opencv` does the shift).

The official devkit (kitti360Scripts ``helpers/project.py``) and Behind the Scenes ignore ``p1, p2``; with
``p1 = p2 = 0`` (as in our synthetic data) all three agree exactly.
"""

import math
from dataclasses import dataclass, replace
from typing import Any, Tuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = [
    "MeiParams",
    "UNDISTORT_ITERATIONS",
    "UNDISTORT_TOLERANCE",
    "mei_max_angle",
    "mei_project",
    "mei_unproject",
    "mei_unproject_with_valid",
]

UNDISTORT_ITERATIONS = 12
"""Newton steps of the undistortion; it converges quadratically, 5-6 steps already reach float64 precision."""

UNDISTORT_TOLERANCE = 1e-7
"""Largest accepted residual of the undistortion, in normalised image units (about 1e-4 pixel)."""


@dataclass(frozen=True)
class MeiParams:
    """MEI fisheye intrinsics in nerfstudio pixel units.

    Attributes:
        xi: mirror parameter (distance of the projection centre behind the sphere centre).
        k1, k2: radial distortion of the normalised image plane.
        p1, p2: tangential distortion.
        gamma1, gamma2: generalised focal lengths, pixels.
        u0, v0: principal point, nerfstudio pixel units (OpenCV value + 0.5).
        width, height: image size in pixels.
    """

    xi: float
    k1: float
    k2: float
    p1: float
    p2: float
    gamma1: float
    gamma2: float
    u0: float
    v0: float
    width: int
    height: int

    @classmethod
    def from_opencv(cls, calibration: Any) -> "MeiParams":
        """Build from OpenCV-unit values (e.g. ``bts_studio.data.kitti360.reader.MeiFisheye``).

        ``calibration`` needs attributes ``xi, k1, k2, p1, p2, gamma1, gamma2, u0, v0, width, height``.
        """
        return cls(
            xi=float(calibration.xi),
            k1=float(calibration.k1),
            k2=float(calibration.k2),
            p1=float(calibration.p1),
            p2=float(calibration.p2),
            gamma1=float(calibration.gamma1),
            gamma2=float(calibration.gamma2),
            u0=float(calibration.u0) + 0.5,
            v0=float(calibration.v0) + 0.5,
            width=int(calibration.width),
            height=int(calibration.height),
        )

    def opencv_principal_point(self) -> Tuple[float, float]:
        """``(u0, v0)`` in OpenCV units, as a calibration file stores them."""
        return self.u0 - 0.5, self.v0 - 0.5

    def resized(self, width: int, height: int) -> "MeiParams":
        """The same camera for an image resized to ``width x height`` (continuous pixel coordinates scale)."""
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            gamma1=self.gamma1 * sx,
            gamma2=self.gamma2 * sy,
            u0=self.u0 * sx,
            v0=self.v0 * sy,
            width=int(width),
            height=int(height),
        )

    @property
    def min_cos_angle(self) -> float:
        """Rays must satisfy ``s_z > -min(xi, 1/xi)``: beyond it the projection folds back (xi > 1) or
        passes behind the projection centre (xi <= 1)."""
        return -min(self.xi, 1.0 / self.xi) if self.xi > 0 else 0.0


def _distort(mx: Tensor, my: Tensor, params: MeiParams) -> Tuple[Tensor, Tensor]:
    r2 = mx * mx + my * my
    radial = 1.0 + params.k1 * r2 + params.k2 * r2 * r2
    xd = mx * radial + 2.0 * params.p1 * mx * my + params.p2 * (r2 + 2.0 * mx * mx)
    yd = my * radial + params.p1 * (r2 + 2.0 * my * my) + 2.0 * params.p2 * mx * my
    return xd, yd


def mei_project(
    points_cam: Float[Tensor, "*batch 3"], params: MeiParams
) -> Tuple[Float[Tensor, "*batch 2"], Bool[Tensor, "*batch"]]:
    """Project camera-frame points (OpenCV axes) to fisheye pixels.

    Args:
        points_cam: points in the fisheye camera frame.
        params: intrinsics (nerfstudio pixel units).

    Returns:
        ``uv`` continuous pixel coordinates (nerfstudio units: pixel ``(i, j)`` covers ``[j, j+1] x [i, i+1]``)
        and ``valid``: the point is in the model's domain (not at the centre, not folded back) and its
        projection lies inside the image ``[0, W) x [0, H)``. Invalid entries still hold finite numbers.
    """
    assert points_cam.shape[-1] == 3, f"points_cam must be [..., 3], got {tuple(points_cam.shape)}"
    norm = points_cam.norm(dim=-1)
    safe_norm = norm.clamp_min(1e-12)
    sphere = points_cam / safe_norm[..., None]
    in_domain = (norm > 1e-12) & (sphere[..., 2] > params.min_cos_angle)
    denominator = torch.where(in_domain, sphere[..., 2] + params.xi, torch.ones_like(norm))
    mx = sphere[..., 0] / denominator
    my = sphere[..., 1] / denominator
    xd, yd = _distort(mx, my, params)
    uv = torch.stack([params.gamma1 * xd + params.u0, params.gamma2 * yd + params.v0], dim=-1)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < params.width) & (uv[..., 1] >= 0) & (uv[..., 1] < params.height)
    return uv, in_domain & inside


def _undistort(xd: Tensor, yd: Tensor, params: MeiParams) -> Tuple[Tensor, Tensor, Tensor]:
    """Invert the distortion with Newton's method; returns the undistorted point and the final residual."""
    mx, my = xd.clone(), yd.clone()
    for _ in range(UNDISTORT_ITERATIONS):
        fx, fy = _distort(mx, my, params)
        ex, ey = fx - xd, fy - yd
        r2 = mx * mx + my * my
        radial = 1.0 + params.k1 * r2 + params.k2 * r2 * r2
        radial_slope = params.k1 + 2.0 * params.k2 * r2  # d radial / d r^2
        j11 = radial + 2.0 * mx * mx * radial_slope + 2.0 * params.p1 * my + 6.0 * params.p2 * mx
        j12 = 2.0 * mx * my * radial_slope + 2.0 * params.p1 * mx + 2.0 * params.p2 * my
        j22 = radial + 2.0 * my * my * radial_slope + 6.0 * params.p1 * my + 2.0 * params.p2 * mx
        determinant = j11 * j22 - j12 * j12
        determinant = torch.where(determinant.abs() > 1e-12, determinant, torch.full_like(determinant, 1e-12))
        mx = mx - (j22 * ex - j12 * ey) / determinant
        my = my - (j11 * ey - j12 * ex) / determinant
    fx, fy = _distort(mx, my, params)
    residual = torch.maximum((fx - xd).abs(), (fy - yd).abs())
    return mx, my, residual


def mei_unproject_with_valid(
    uv: Float[Tensor, "*batch 2"], params: MeiParams
) -> Tuple[Float[Tensor, "*batch 3"], Bool[Tensor, "*batch"]]:
    """:func:`mei_unproject`, also returning which pixels have a ray (the rest are zero vectors)."""
    assert uv.shape[-1] == 2, f"uv must be [..., 2], got {tuple(uv.shape)}"
    # float64 keeps the Newton residual far below a pixel; MPS has no float64.
    work_dtype = torch.float64 if uv.device.type != "mps" else torch.float32
    work = uv.to(work_dtype)
    xd = (work[..., 0] - params.u0) / params.gamma1
    yd = (work[..., 1] - params.v0) / params.gamma2
    mx, my, residual = _undistort(xd, yd, params)
    r2 = mx * mx + my * my
    discriminant = 1.0 + (1.0 - params.xi * params.xi) * r2
    tolerance = UNDISTORT_TOLERANCE * (1.0 + xd.abs() + yd.abs())
    valid = (discriminant >= 0) & torch.isfinite(residual) & (residual <= tolerance)
    scale = (params.xi + discriminant.clamp_min(0.0).sqrt()) / (1.0 + r2)
    rays = torch.stack([scale * mx, scale * my, scale - params.xi], dim=-1)
    rays = rays / rays.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    rays = torch.where(valid[..., None], rays, torch.zeros_like(rays))
    return rays.to(uv.dtype), valid


def mei_unproject(uv: Float[Tensor, "*batch 2"], params: MeiParams) -> Float[Tensor, "*batch 3"]:
    """Unit ray directions (fisheye camera frame, OpenCV axes) of continuous pixel coordinates.

    Args:
        uv: nerfstudio pixel coordinates (the centre of pixel ``(i, j)`` is ``(j + 0.5, i + 0.5)``).
        params: intrinsics (nerfstudio pixel units).

    Returns:
        Unit rays; pixels outside the model's domain (e.g. the corners of a KITTI-360 fisheye image) get
        the zero vector, so ``rays.norm(dim=-1) > 0`` is the validity mask.
    """
    return mei_unproject_with_valid(uv, params)[0]


def mei_max_angle(params: MeiParams) -> float:
    """Largest angle (radians) between a projectable ray and the optical axis."""
    return math.acos(params.min_cos_angle)
