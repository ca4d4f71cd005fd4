"""``bts-studio synth-deepvoxels OUT``: one generated object in DeepVoxels' on-disk scene layout.

Like the released synthetic objects (classics.md B.4): a z-up world, a Lambertian object inside the unit voxel-grid
cube at the origin, white background, training views at random on the upper hemisphere, a spiral of test views on
the upper hemisphere, Kinect-like intrinsics (f = 525 px at 512 px). The object is a generated ShapeNet-like chair or
car (``bts_studio.data.synthetic.shapenet_objects``, unit bounding-box diagonal) rendered exactly by the shared ray
caster (``bts_studio.data.synthetic.shapenet_render``). Output:

    OUT/train/<scene>/{rgb,pose,intrinsics.txt}   OUT/validation/<scene>/{rgb,pose}   OUT/test/<scene>/{rgb,pose}
    OUT/synth_deepvoxels.json                     (the options that made it)

The folder appears atomically (written under a temporary sibling name, then renamed); an existing OUT is only
replaced with ``--overwrite``.
"""

import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Literal, Tuple

import numpy as np
import torch
import tyro
from jaxtyping import Float
from torch import Tensor

from bts_studio.data.deepvoxels.writer import format_intrinsics, write_split
from bts_studio.data.shapenet.srn_writer import srn_focal_length
from bts_studio.data.synthetic.shapenet_objects import CLASS_SAMPLERS, ObjectInstance, place
from bts_studio.data.synthetic.shapenet_render import render_views
from bts_studio.data.synthetic.shapenet_views import orbit_poses, sphere_positions
from bts_studio.data.synthetic.staging import write_folder_atomically


@dataclass
class SynthDeepVoxelsConfig:
    """Generate one object scene in DeepVoxels' layout."""

    out: tyro.conf.Positional[Path]
    """Output root (created; an existing one is only replaced with --overwrite)."""
    object_class: Literal["chairs", "cars"] = "chairs"
    """Which generated ShapeNet-like object to render."""
    scene: str = "chair"
    """Scene folder name under train/, validation/, test/."""
    seed: int = 0
    """Random seed of the object's shape and of the training viewpoints."""
    resolution: int = 512
    """Side of the square images (the paper's 512)."""
    train_views: int = 479
    """Training views, uniformly at random on the upper hemisphere (the released objects: 479)."""
    validation_views: int = 16
    """Validation views, at random on the upper hemisphere."""
    test_views: int = 1000
    """Test views on the upper-hemisphere spiral (the released objects: 1000)."""
    camera_distance: float = 1.5
    """Distance of every camera from the object centre (world units; the grid is the unit cube)."""
    spiral_turns: float = 6.0
    """Turns of the test spiral between the pole and the equator."""
    overwrite: bool = False
    """Replace an existing output folder."""
    workers: int = 0
    """Worker processes, each single-threaded; 0: one per CPU core (inline below 64 views)."""


def upper_hemisphere_positions(count: int, radius: float, generator: torch.Generator) -> Float[Tensor, "count 3"]:
    """Uniform random positions on the upper (z >= 0) hemisphere: uniform sphere samples with z mirrored up."""
    positions = sphere_positions(count, radius, generator)
    positions[:, 2] = positions[:, 2].abs()
    return positions


def hemisphere_spiral_positions(count: int, radius: float, turns: float) -> Float[Tensor, "count 3"]:
    """``count`` positions on a spherical spiral from near the pole (polar angle 3 degrees) down to the equator,
    turning ``turns`` times about z (DeepVoxels' test trajectory also sweeps the upper hemisphere; deviation:
    its ``get_archimedean_spiral`` parametrisation is not reproduced)."""
    s = torch.linspace(0.0, 1.0, count, dtype=torch.float64) if count > 1 else torch.zeros(1, dtype=torch.float64)
    theta = math.radians(3.0) + s * (math.pi / 2 - math.radians(3.0))
    phi = 2.0 * math.pi * turns * s
    return radius * torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1)


@dataclass(frozen=True)
class ViewChunk:
    """Views ``[first, first + count)`` of one split, rendered and written by one worker call."""

    split: str
    first: int
    poses: Tuple[Tuple[float, ...], ...]


def scene_object(object_class: str, seed: int) -> ObjectInstance:
    """The generated object of a scene (benchmarks re-render it for exact ground-truth depth)."""
    return place(CLASS_SAMPLERS[object_class](np.random.default_rng([seed, 1])), "srn")


def _render_chunk(chunk: ViewChunk, root: Path, config: SynthDeepVoxelsConfig) -> int:
    instance = scene_object(config.object_class, config.seed)
    poses = torch.tensor(chunk.poses, dtype=torch.float64).reshape(-1, 4, 4)
    size = config.resolution
    focal = srn_focal_length(size)
    rendered = render_views(instance, poses, focal, focal, size / 2.0, size / 2.0, size, size)
    text = None
    if chunk.split == "train" and chunk.first == 0:
        text = format_intrinsics(focal, size / 2.0, size / 2.0, (0.0, 0.0, 0.0), 0.0, 1.0, size, size)
    write_split(root / chunk.split / config.scene, rendered.rgb, poses.numpy(), chunk.first, text)
    return poses.shape[0]


def _single_threaded_worker() -> None:
    # Parallelism comes from processes; torch's own thread pool would only spin against them.
    torch.set_num_threads(1)


def view_chunks(config: SynthDeepVoxelsConfig, chunk_size: int) -> List[ViewChunk]:
    """All views of the three splits, cut into chunks of at most ``chunk_size``."""
    generator = torch.Generator().manual_seed(config.seed)
    positions = {
        "train": upper_hemisphere_positions(config.train_views, config.camera_distance, generator),
        "validation": upper_hemisphere_positions(config.validation_views, config.camera_distance, generator),
        "test": hemisphere_spiral_positions(config.test_views, config.camera_distance, config.spiral_turns),
    }
    chunks = []
    for split, split_positions in positions.items():
        poses = orbit_poses(split_positions)
        for first in range(0, poses.shape[0], chunk_size):
            part = poses[first : first + chunk_size].reshape(-1, 16).tolist()
            chunks.append(ViewChunk(split, first, tuple(tuple(row) for row in part)))
    return chunks


def generate(config: SynthDeepVoxelsConfig, root: Path) -> None:
    """Render and write every split under ``root`` (a fresh folder)."""
    total = config.train_views + config.validation_views + config.test_views
    workers = config.workers if config.workers > 0 else (1 if total < 64 else os.cpu_count() or 1)
    chunks = view_chunks(config, chunk_size=max(1, min(16, math.ceil(total / (4 * workers)))))
    if workers == 1:
        threads = torch.get_num_threads()
        _single_threaded_worker()
        try:
            for chunk in chunks:
                _render_chunk(chunk, root, config)
        finally:
            torch.set_num_threads(threads)
    else:
        # spawn, not fork: forking a process whose OpenMP pool has run can hang the child.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded_worker) as pool:
            futures = [pool.submit(_render_chunk, chunk, root, config) for chunk in chunks]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # nothing may write into a removed folder
                raise
    record = {"generator": "bts-studio synth-deepvoxels", **asdict(config), "out": str(config.out)}
    (root / "synth_deepvoxels.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv: List[str], prog: str = "bts-studio synth-deepvoxels") -> None:
    """Parse ``argv`` and generate the scene atomically (a temporary sibling folder renamed at the end)."""
    config = tyro.cli(SynthDeepVoxelsConfig, args=argv, prog=prog)
    out = config.out
    if out.exists() and not config.overwrite:
        raise SystemExit(f"{out} already exists; pass --overwrite to replace it")
    if min(config.resolution, config.train_views, config.test_views) < 1 or config.validation_views < 0:
        raise SystemExit("--resolution, --train-views and --test-views must be positive")
    if config.camera_distance <= math.sqrt(3.0) / 2.0:
        raise SystemExit("--camera-distance must exceed sqrt(3)/2, the default near plane (cameras outside the grid)")
    write_folder_atomically(out, lambda folder: generate(config, folder), "synth-deepvoxels")
    print(f"wrote {out}")
