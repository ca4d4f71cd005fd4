"""Generate synthetic KITTI-360 sequences: street world -> calibration, poses, timestamps, then every frame.

Everything a frame needs is derived from what the calibration and pose files say (they are written first
and read back), so the files and the pixels can never disagree. Frames are independent, so they are
rendered by a pool of worker processes on CPU (one per core); results do not depend on the worker count.
"""

import datetime
import json
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.kitti360 import writer
from bts_studio.data.synthetic import ground_truth
from bts_studio.data.synthetic.frame_renderer import FrameRenderer, SequenceJob, init_worker, render_in_worker
from bts_studio.data.synthetic.primitives import Scene
from bts_studio.data.synthetic.rig import Rig, build_rig, load_rig
from bts_studio.data.synthetic.street import StreetLayout, build_street, ego_poses

GENERATOR_VERSION = 1
REAL_SEQUENCE_IDS = (0, 2, 3, 4, 5, 6, 7, 9, 10)
"""KITTI-360's own sequence numbers; generated sequences use them first, then 11, 12, ..."""
STATIONARY_FRAMES = 2
"""The ego vehicle waits this many frames before driving; like KITTI-360, poses.txt leaves them out."""


def sequence_ids(count: int) -> List[int]:
    ids = list(REAL_SEQUENCE_IDS[:count])
    return ids + list(range(REAL_SEQUENCE_IDS[-1] + 1, REAL_SEQUENCE_IDS[-1] + 1 + count - len(ids)))


def stationary_frames(frames: int) -> int:
    """Frames left out of poses.txt at the start (none for very short sequences, so some poses remain)."""
    return STATIONARY_FRAMES if frames > 2 * STATIONARY_FRAMES else 0


@dataclass
class GenerationReport:
    sequences: List[str]
    frames: int
    posed_frames: int
    perspective_size: Tuple[int, int]
    fisheye_size: Tuple[int, int]


def default_workers(device: torch.device, frames: int, scale: float) -> int:
    """Worker processes: one per core on CPU for sets big enough to repay process start-up, else 1."""
    if device.type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8)) if frames * scale * scale >= 2.0 else 1


def generate_dataset(
    root: Path,
    sequences: int,
    frames: int,
    scale: float,
    seed: int,
    device: torch.device,
    workers: int = 1,
    on_frame: Optional[Callable[[str, int], None]] = None,
    world: str = "street",
    texture_scale: float = 1.0,
    texture_contrast: float = 1.0,
) -> GenerationReport:
    """Write a complete synthetic KITTI-360 folder into ``root`` (which must exist and be empty).

    Args:
        root: output folder.
        sequences: number of sequences.
        frames: frames per sequence (including the stationary start left out of poses.txt).
        scale: image scale (1 = full KITTI-360 resolution).
        seed: randomness seed; equal settings give identical files, whatever ``workers`` is.
        device: torch device for ray casting and shading.
        workers: processes rendering frames in parallel (1 = in this process).
        on_frame: called after each frame with (sequence name, frame index), e.g. to advance a progress bar.
        world: ``street`` (default) or ``one-car`` (:data:`~bts_studio.data.synthetic.street.WORLDS`).
        texture_scale: multiplier of the procedural texture's noise cell sizes (1: the default world).
        texture_contrast: multiplier of the texture's deviation from mid-grey (1: the default world).
    """
    writer.write_calibration(root / "calibration", build_rig(scale))
    rig: Rig = load_rig(root)  # render with exactly what the files say
    azimuths = lidar_azimuths(scale)
    skipped = stationary_frames(frames)
    jobs = []
    for sequence_id in sequence_ids(sequences):
        name = formats.sequence_name(sequence_id)
        rng = np.random.default_rng([seed, sequence_id])
        paths = formats.Kitti360Paths(root, name)
        layout, sun = _build_scene(root, name, rng, frames, seed, world)
        poses = _write_poses(paths, rig, layout, frames, skipped, rng)
        _write_timestamps(paths, frames, rng, sequence_id)
        for camera in range(4):
            paths.image_dir(camera).mkdir(parents=True, exist_ok=True)
        paths.velodyne_dir.mkdir(parents=True, exist_ok=True)
        for camera in formats.PERSPECTIVE_CAMERAS:
            ground_truth.depth_path(root, name, camera, 0).parent.mkdir(parents=True, exist_ok=True)
        jobs.append(
            SequenceJob(
                root=root,
                sequence=name,
                poses=poses,
                rig=rig,
                layout=layout,
                sun=sun,
                shader_seed=int(rng.integers(2**31)),
                lidar_azimuths=azimuths,
                device=str(device),
                texture_scale=texture_scale,
                texture_contrast=texture_contrast,
            )
        )
    tasks = [(job, frame) for job in jobs for frame in range(frames)]
    if workers <= 1:
        renderers: Dict[str, FrameRenderer] = {}
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)  # small tensors: threads only add synchronisation (and spin on busy machines)
        try:
            for job, frame in tasks:
                if job.sequence not in renderers:
                    renderers.clear()
                    renderers[job.sequence] = FrameRenderer(job)
                renderers[job.sequence].render_frame(frame)
                if on_frame is not None:
                    on_frame(job.sequence, frame)
        finally:
            torch.set_num_threads(threads)
    else:
        context = multiprocessing.get_context("spawn")  # fork after torch's thread pools started is unsafe
        with context.Pool(workers, initializer=init_worker, initargs=(1,)) as pool:
            for name, frame in pool.imap_unordered(render_in_worker, tasks, chunksize=1):
                if on_frame is not None:
                    on_frame(name, frame)
    width, height = rig.fisheye[2].width, rig.fisheye[2].height
    info = {
        "generator": "bts-studio synth-kitti360",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "world": world,
        "texture_scale": texture_scale,
        "texture_contrast": texture_contrast,
        "scale": scale,
        "frames": frames,
        "sequences": [job.sequence for job in jobs],
        "stationary_frames": skipped,
        "perspective_size": list(rig.perspective_size),
        "fisheye_size": [width, height],
        "lidar_azimuths": azimuths,
    }
    (root / ground_truth.GROUND_TRUTH_DIR / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return GenerationReport(
        [job.sequence for job in jobs], frames, frames - skipped, rig.perspective_size, (width, height)
    )


def lidar_azimuths(scale: float) -> int:
    """Lidar columns per revolution: ~1024 (0.35 deg) around the default scale, fewer for tiny sets."""
    return int(min(2048, max(256, 32 * round(2048 * scale / 32))))


def _build_scene(
    root: Path, name: str, rng: np.random.Generator, frames: int, seed: int, world: str = "street"
) -> Tuple[StreetLayout, Tuple[float, float, float]]:
    """Build the street, save its scene to the ground-truth sidecar; return the layout and sun direction."""
    # KITTI-360 worlds sit kilometres from their origin, ~100 m up; so do ours (it exercises recentring).
    origin_xy = (float(rng.uniform(800.0, 4000.0)), float(rng.uniform(800.0, 4000.0)))
    ground_z = float(rng.uniform(100.0, 130.0))
    street = build_street(rng, drive_length=frames * 1.1 + 5.0, origin_xy=origin_xy, ground_z=ground_z, world=world)
    metadata = {
        "generator": "bts-studio synth-kitti360",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "world": world,
        "sequence": name,
        "street": street.layout.to_json(),
        "sun_direction": list(street.sun_direction),
    }
    scene = Scene(street.primitives, origin=(origin_xy[0], origin_xy[1], ground_z), metadata=metadata)
    path = ground_truth.scene_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.save(path)
    return street.layout, street.sun_direction


def _write_poses(
    paths: formats.Kitti360Paths, rig: Rig, layout: StreetLayout, frames: int, skipped: int, rng: np.random.Generator
) -> np.ndarray:
    """Write poses.txt and cam0_to_world.txt; return the pose of every frame as the files define it."""
    poses = ego_poses(layout, frames, skipped, rng)
    frame_ids = np.arange(skipped, frames)
    paths.poses_dir.mkdir(parents=True, exist_ok=True)
    writer.write_poses(paths.poses, frame_ids, poses[skipped:])
    read_ids, read_poses = formats.read_poses(paths.poses)
    assert np.array_equal(read_ids, frame_ids)
    cam0 = np.stack([rig.camera_to_world(pose, 0) for pose in read_poses])
    writer.write_cam0_to_world(paths.cam0_to_world, frame_ids, cam0)
    # Stationary frames share the first written pose (the vehicle had not moved yet).
    full = np.concatenate([np.repeat(read_poses[:1], skipped, axis=0), read_poses])
    return full


def _write_timestamps(paths: formats.Kitti360Paths, frames: int, rng: np.random.Generator, sequence_id: int) -> None:
    start = datetime.datetime(2013, 5, 28, 8, 46, 2, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        minutes=7 * sequence_id
    )
    image_stamps = writer.frame_timestamps(start, frames, rng)
    for camera in range(4):
        writer.write_timestamps(paths.image_timestamps(camera), image_stamps)
    velodyne_stamps = writer.frame_timestamps(start, frames, rng, offset_ns=-50_000_000)
    writer.write_timestamps(paths.velodyne_timestamps, velodyne_stamps)
