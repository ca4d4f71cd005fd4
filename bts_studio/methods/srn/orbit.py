"""Orbit cameras around an object-centred, z-up world (SRN's ShapeNet renderings), for videos.

Poses come out as nerfstudio wants them: OpenGL camera-to-world ``[N, 4, 4]`` (docs/conventions.md).
"""

import math
from typing import Dict, List

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from bts_studio.core.geometry import opencv_to_opengl
from bts_studio.data.synthetic.shapenet_views import orbit_poses


def orbit_camera_to_worlds(
    num_frames: int, radius: float, elevation_deg: float, turns: float = 1.0
) -> Float[Tensor, "N 4 4"]:
    """``num_frames`` OpenGL poses circling the origin ``turns`` times at a fixed elevation, looking at it."""
    assert num_frames >= 1 and radius > 0, "need at least one frame and a positive radius"
    azimuth = torch.arange(num_frames, dtype=torch.float64) / num_frames * 2.0 * math.pi * turns
    elevation = math.radians(elevation_deg)
    positions = torch.stack(
        [
            radius * math.cos(elevation) * torch.cos(azimuth),
            radius * math.cos(elevation) * torch.sin(azimuth),
            torch.full_like(azimuth, radius * math.sin(elevation)),
        ],
        dim=-1,
    )
    return opencv_to_opengl(orbit_poses(positions)).float()


def orbit_cameras(c2w: Float[Tensor, "N 4 4"], focal: float, size: int) -> Cameras:
    """Square pinhole cameras (``size`` px, focal length in px, principal point at the centre) at ``c2w``."""
    return Cameras(
        camera_to_worlds=c2w[:, :3, :],
        fx=focal,
        fy=focal,
        cx=size / 2.0,
        cy=size / 2.0,
        width=size,
        height=size,
        camera_type=CameraType.PERSPECTIVE,
    )


def camera_path_json(c2w: Float[Tensor, "N 4 4"], focal: float, size: int, fps: int) -> Dict:
    """The orbit as an ``ns-render camera-path`` file (row-major 4x4 poses, vertical fov in degrees)."""
    fov = math.degrees(2.0 * math.atan(size / (2.0 * focal)))
    frames: List[Dict] = [
        {"camera_to_world": pose.reshape(-1).tolist(), "fov": fov, "aspect": 1.0} for pose in c2w.double()
    ]
    return {
        "camera_type": "perspective",
        "render_height": size,
        "render_width": size,
        "seconds": len(frames) / fps,
        "camera_path": frames,
    }
