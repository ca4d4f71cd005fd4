"""Render and write one synthetic KITTI-360 frame: 2 rectified images + depth, 2 fisheye images, 1 lidar scan.

A :class:`FrameRenderer` holds everything fixed over a sequence (scene, shader, camera rays); frames are
independent of each other, so they can be rendered by several worker processes in any order and still
give identical files.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from bts_studio.core.fisheye import MeiParams, mei_unproject_with_valid
from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.kitti360 import writer
from bts_studio.data.synthetic import ground_truth, lidar
from bts_studio.data.synthetic.raycast import RAY_CHUNK, RayHits, tile_order
from bts_studio.data.synthetic.rig import Rig
from bts_studio.data.synthetic.shading import StreetShader, to_srgb8
from bts_studio.data.synthetic.street import StreetLayout

_TILE = int(round(RAY_CHUNK**0.5))


@dataclass
class CameraRays:
    """Camera-frame ray directions of one camera, in casting (tile) order.

    Attributes:
        directions: ``[M, 3]`` camera frame (OpenCV axes); perspective rays have ``z = 1`` so ``t`` is z-depth.
        pixels: ``[M]`` row-major index of each ray's pixel.
        size: ``(width, height)``.
        pixel_angle: radians per pixel near the image centre (texture filtering).
    """

    directions: Tensor
    pixels: Tensor
    size: Tuple[int, int]
    pixel_angle: float


def perspective_rays(projection: np.ndarray, size: Tuple[int, int], device: torch.device) -> CameraRays:
    """Rays through the pixel centres of a rectified camera with ``P_rect`` (OpenCV pixel units)."""
    width, height = size
    fx, fy, cx, cy = projection[0, 0], projection[1, 1], projection[0, 2], projection[1, 2]
    order = tile_order(height, width, _TILE)
    rows, cols = (order // width).double(), (order % width).double()
    # OpenCV convention: the centre of pixel (i, j) is (u, v) = (j, i).
    directions = torch.stack([(cols - cx) / fx, (rows - cy) / fy, torch.ones_like(rows)], dim=-1)
    return CameraRays(directions.float().to(device), order.to(device), size, 1.0 / float(fx))


def fisheye_rays(fisheye: formats.MeiFisheye, device: torch.device) -> CameraRays:
    """Rays through the pixel centres of a MEI fisheye; pixels outside the model's domain get none."""
    params = MeiParams.from_opencv(fisheye)
    order = tile_order(fisheye.height, fisheye.width, _TILE)
    rows, cols = (order // fisheye.width).double(), (order % fisheye.width).double()
    rays, valid = mei_unproject_with_valid(torch.stack([cols + 0.5, rows + 0.5], dim=-1), params)
    return CameraRays(
        rays[valid].float().to(device),
        order[valid].to(device),
        (fisheye.width, fisheye.height),
        (1.0 + params.xi) / params.gamma1,
    )


@dataclass
class SequenceJob:
    """What a worker needs to render frames of one sequence (small and picklable)."""

    root: Path
    sequence: str
    poses: np.ndarray  # [frames, 4, 4] pose -> world of every frame, as the files define it
    rig: Rig
    layout: StreetLayout
    sun: Tuple[float, float, float]
    shader_seed: int
    lidar_azimuths: int
    device: str
    texture_scale: float = 1.0
    texture_contrast: float = 1.0


class FrameRenderer:
    """Renders frames of one sequence and writes their files."""

    def __init__(self, job: SequenceJob):
        self.job = job
        self.device = torch.device(job.device)
        self.scene = ground_truth.load_ground_truth_scene(job.root, job.sequence)
        self.shader = StreetShader(
            self.scene, job.layout, job.sun, job.shader_seed, self.device, job.texture_scale, job.texture_contrast
        )
        self.paths = formats.Kitti360Paths(job.root, job.sequence)
        self.cameras: Dict[int, CameraRays] = {
            camera: perspective_rays(job.rig.projection[camera], job.rig.perspective_size, self.device)
            for camera in formats.PERSPECTIVE_CAMERAS
        }
        for camera in formats.FISHEYE_CAMERAS:
            self.cameras[camera] = fisheye_rays(job.rig.fisheye[camera], self.device)
        self.scan_directions = lidar.scan_directions(job.lidar_azimuths).to(self.device)

    def render_camera(self, camera: int, frame: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """uint8 image ``[H, W, 3]`` and, for perspective cameras, float32 z-depth ``[H, W]`` (inf = sky)."""
        rays = self.cameras[camera]
        cam_to_world = self.job.rig.camera_to_world(self.job.poses[frame], camera)
        rotation = torch.tensor(cam_to_world[:3, :3], dtype=torch.float32, device=self.device)
        origin = torch.tensor(cam_to_world[:3, 3], dtype=torch.float64, device=self.device)
        directions = rays.directions @ rotation.T
        hits = self.scene.raycast(origin, directions)
        rgb = self.shader.shade(origin, directions, hits, rays.pixel_angle)
        width, height = rays.size
        image = torch.zeros(height * width, 3, dtype=torch.uint8, device=self.device)
        image.index_copy_(0, rays.pixels, to_srgb8(rgb))
        depth = None
        if camera in formats.PERSPECTIVE_CAMERAS:
            flat = torch.full((height * width,), float("inf"), dtype=torch.float32, device=self.device)
            flat.index_copy_(0, rays.pixels, hits.t.float())
            depth = flat.view(height, width).cpu().numpy()
        return image.view(height, width, 3).cpu().numpy(), depth

    def render_scan(self, frame: int) -> np.ndarray:
        """float32 ``[N, 4]`` lidar points (velodyne frame) and intensities."""
        velo_to_world = self.job.rig.velodyne_to_world(self.job.poses[frame])
        rotation = torch.tensor(velo_to_world[:3, :3], dtype=torch.float32, device=self.device)
        origin = torch.tensor(velo_to_world[:3, 3], dtype=torch.float64, device=self.device)
        directions = self.scan_directions @ rotation.T
        hits = self.scene.raycast(origin, directions)
        keep = ((hits.t >= lidar.MIN_RANGE) & (hits.t <= lidar.MAX_RANGE)).nonzero()[:, 0]
        if keep.numel() == 0:
            return np.zeros((0, 4), dtype=np.float32)
        kept = RayHits(*(value.index_select(0, keep) for value in hits))
        # Points in the velodyne frame come straight from the ray: exact, whatever the world offset.
        kept_directions = directions.index_select(0, keep)
        points = self.scan_directions.index_select(0, keep) * kept.t[:, None]
        hit_points = self.shader.relative(origin) + kept_directions * kept.t[:, None]
        intensity = self.shader.reflectivity(kept, hit_points, kept_directions)
        return torch.cat([points, intensity[:, None]], dim=1).float().cpu().numpy()

    def render_frame(self, frame: int) -> None:
        """Render all sensors of ``frame`` and write their files."""
        for camera in self.cameras:
            image, depth = self.render_camera(camera, frame)
            writer.write_png(self.paths.image(camera, frame), image)
            if depth is not None:
                writer.write_depth(ground_truth.depth_path(self.job.root, self.job.sequence, camera, frame), depth)
        writer.write_velodyne(self.paths.velodyne(frame), self.render_scan(frame))


_WORKER_RENDERERS: Dict[str, FrameRenderer] = {}


def init_worker(threads: int) -> None:
    """Process-pool initialiser: a few torch threads per worker process (workers already use every core)."""
    torch.set_num_threads(threads)


def render_in_worker(task: Tuple[SequenceJob, int]) -> Tuple[str, int]:
    """Render one frame in a worker process, building (and caching) the sequence's renderer on first use."""
    job, frame = task
    renderer = _WORKER_RENDERERS.get(job.sequence)
    if renderer is None:
        _WORKER_RENDERERS.clear()
        renderer = _WORKER_RENDERERS[job.sequence] = FrameRenderer(job)
    renderer.render_frame(frame)
    return job.sequence, frame
