"""``bts-studio synth-shapenet``: synthetic ShapeNet-like classes in the SRN and/or DVR on-disk formats.

Every instance is built from analytic parts (``shapenet_objects.py``) and rendered exactly (``shapenet_render.py``), so
poses, masks, depth and surface points are exact ground truth. Output layout:

    OUT/srn_<class>/<class>_{train,val,test}/<instance>/...   (data/shapenet/srn_writer.py)
    OUT/dvr/metadata.yaml, OUT/dvr/<synset>/...                (data/shapenet/dvr_writer.py)
    OUT/synth_shapenet.json                                    (the options that made it)

The same objects appear in both formats (in each format's own world frame) and in the same splits.
"""

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
import torch
import tyro
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bts_studio.data.shapenet import dvr_writer as dvr_format
from bts_studio.data.shapenet import srn_writer as srn_format
from bts_studio.data.synthetic.shapenet_objects import (
    CLASS_SAMPLERS,
    Z_UP_TO_Y_UP,
    ObjectInstance,
    instance_names,
    place,
)
from bts_studio.data.synthetic.shapenet_render import render_views
from bts_studio.data.synthetic.shapenet_surface import sample_surface
from bts_studio.data.synthetic.shapenet_views import archimedean_spiral_positions, orbit_poses, sphere_positions
from bts_studio.data.synthetic.staging import write_folder_atomically

SRN_CAMERA_DISTANCE = {"cars": 1.3, "cars-varied": 1.3, "chairs": 2.0}
"""Camera distance of SRN's renderings per class (pixelNeRF's near/far are these -/+ 0.5 and 0.75)."""

DVR_DISTANCE_RANGE = (1.9, 2.3)
"""Camera distances of the DVR views; with DVR's focal length the unit cube stays in the picture."""


@dataclass
class SynthShapeNetConfig:
    """Generate synthetic car/chair classes in SRN's and/or DVR's ShapeNet layout."""

    out: tyro.conf.Positional[Path]
    """Output folder (created; an existing one is only replaced with --overwrite)."""
    classes: str = "cars"
    """Comma-separated classes to generate: cars, cars-varied (sedans, hatchbacks, SUVs, vans, pickups, sports
    cars), chairs."""
    instances: int = 64
    """Training instances per class."""
    val_instances: Optional[int] = None
    """Validation instances per class (held-out objects); None: max(1, instances // 8)."""
    test_instances: Optional[int] = None
    """Test instances per class (held-out objects); None: max(1, instances // 8)."""
    format: Literal["srn", "dvr", "both"] = "both"
    """Which on-disk format(s) to write."""
    seed: int = 0
    """Random seed; every instance depends only on (seed, class, instance number)."""
    overwrite: bool = False
    """Replace an existing output folder."""
    resolution: int = 128
    """Side length of the square images (SRN's renderings are 128 px, DVR's 256 px)."""
    train_views: int = 50
    """SRN views per training instance, at random on the sphere (SRN: 50)."""
    test_views: int = 251
    """SRN views per val/test instance, on the Archimedean spiral (SRN: 251)."""
    dvr_views: int = 24
    """DVR views per object, at random on the sphere (DVR's renderings: 24)."""
    pointcloud_points: int = 100_000
    """Surface points per object in DVR's pointcloud.npz (Occupancy Networks: 100k)."""
    dvr_depth_format: Literal["npy", "exr"] = "npy"
    """DVR depth maps as ``.npy`` or as OpenEXR ``.exr`` (DVR's own format; needs the OpenEXR package)."""
    dvr_input_views: int = 0
    """Encoder input views per object in ``img_choy2016/`` with their own cameras.npz (DVR's ShapeNet set has
    24 3D-R2N2 renderings); 0: none (models then take input views from ``image/``)."""
    dvr_input_resolution: int = 64
    """Side length of the ``img_choy2016`` views (3D-R2N2's are 137 px; the encoder resizes to 224)."""
    dvr_split_prefix: str = ""
    """Prefix of the DVR split lists: empty for ``train.lst``, ``softras_`` for the NMR names."""
    dtu_scene: bool = False
    """Also write ``OUT/dtu/scan1``: the first test object as a DTU-style multi-view scene (full projection
    world_mat_i, non-trivial scale_mat_i) for dvr-multiview."""
    dtu_views: int = 49
    """Views of the DTU-style scene (DTU's scans have 49 or 64)."""
    workers: int = 0
    """Worker processes, each single-threaded; 0: one per CPU core (inline for fewer than 8 objects)."""


def class_list(text: str) -> List[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CLASS_SAMPLERS]
    if not names or unknown:
        raise SystemExit(f"--classes: choose from {', '.join(CLASS_SAMPLERS)} (got {text!r})")
    return names


def split_sizes(config: SynthShapeNetConfig) -> dict[str, int]:
    default = max(1, config.instances // 8)
    sizes = {
        "train": config.instances,
        "val": default if config.val_instances is None else config.val_instances,
        "test": default if config.test_instances is None else config.test_instances,
    }
    if min(sizes.values()) < 0 or sizes["train"] < 1:
        raise SystemExit("instance counts must be >= 0, with at least one training instance")
    return sizes


def instance_rng(seed: int, class_name: str, number: int) -> tuple[np.random.Generator, torch.Generator]:
    """Independent numpy (shape) and torch (viewpoints) generators for one instance."""
    class_key = sum(map(ord, class_name))
    shape_rng = np.random.default_rng([seed, class_key, number])
    view_rng = torch.Generator().manual_seed(int(np.random.default_rng([seed, class_key, number, 1]).integers(2**62)))
    return shape_rng, view_rng


def canonical_instance(seed: int, class_name: str, number: int) -> tuple[ObjectInstance, torch.Generator]:
    """The object numbered ``number`` (across train, val, test in that order) and its viewpoint generator.

    Its name is ``instance_names(class_name, total, seed)[number]``; tests use this to get the exact geometry.
    """
    shape_rng, view_rng = instance_rng(seed, class_name, number)
    return CLASS_SAMPLERS[class_name](shape_rng), view_rng


def write_srn(root: Path, split: str, name: str, canonical: ObjectInstance, views: torch.Generator, config) -> None:
    instance = place(canonical, "srn")
    distance = SRN_CAMERA_DISTANCE[canonical.class_name]
    if split == "train":
        positions = sphere_positions(config.train_views, distance, views)
    else:
        positions = archimedean_spiral_positions(config.test_views, distance)
    poses = orbit_poses(positions)
    size = config.resolution
    focal, center = srn_format.srn_focal_length(size), size / 2.0
    rendered = render_views(instance, poses, focal, focal, center, center, size, size)
    instance_dir = root / f"srn_{canonical.class_name}" / f"{canonical.class_name}_{split}" / name
    srn_format.write_srn_instance(instance_dir, rendered.rgb, poses.numpy(), focal, center, center)


def _y_up() -> torch.Tensor:
    """``[4, 4]``: poses are built z-up, then turned with the object into ShapeNet's y-up frame."""
    to_y_up = torch.eye(4, dtype=torch.float64)
    to_y_up[:3, :3] = torch.from_numpy(Z_UP_TO_Y_UP)
    return to_y_up


def _render_dvr_views(instance: ObjectInstance, count: int, size: int, views: torch.Generator):
    """``(poses [count, 4, 4] camera-to-world OpenCV, y-up; rendered views)``: cameras on random rays at DVR's
    distances, DVR's focal length at ``size`` pixels. Draws from ``views`` in a fixed order (same seed, same data)."""
    low, high = DVR_DISTANCE_RANGE
    directions = sphere_positions(count, 1.0, views)
    distances = low + (high - low) * torch.rand(count, 1, generator=views, dtype=torch.float64)
    poses = _y_up() @ orbit_poses(directions * distances)
    focal_px = dvr_format.DVR_FOCAL * size / 2.0
    return poses, render_views(instance, poses, focal_px, focal_px, size / 2.0, size / 2.0, size, size)


def write_dvr(root: Path, name: str, canonical: ObjectInstance, views: torch.Generator, config) -> None:
    instance = place(canonical, "dvr")
    poses, rendered = _render_dvr_views(instance, config.dvr_views, config.resolution, views)
    points, normals = sample_surface(instance, config.pointcloud_points, views)
    synset = dvr_format.SYNSETS[canonical.class_name][0]
    object_dir = root / "dvr" / synset / name
    dvr_format.write_dvr_object(
        object_dir,
        rendered.rgb,
        rendered.mask,
        rendered.z_depth,
        torch.linalg.inv(poses).numpy(),
        dvr_format.DVR_FOCAL,
        points.numpy(),
        normals.numpy(),
    )
    if config.dvr_depth_format == "exr":
        dvr_format.write_exr_depths(object_dir, rendered.z_depth)
    if config.dvr_input_views > 0:
        count = config.dvr_input_views
        input_poses = _y_up() @ orbit_poses(sphere_positions(count, float(np.mean(DVR_DISTANCE_RANGE)), views))
        size = config.dvr_input_resolution
        focal_px = dvr_format.DVR_FOCAL * size / 2.0
        inputs = render_views(instance, input_poses, focal_px, focal_px, size / 2.0, size / 2.0, size, size)
        dvr_format.write_input_views(object_dir, inputs.rgb, torch.linalg.inv(input_poses).numpy(), focal_px)


def write_dtu(root: Path, canonical: ObjectInstance, views: torch.Generator, config) -> None:
    """The DTU-style multi-view scene of one object (``dvr_format.write_dtu_scene``)."""
    instance = place(canonical, "dvr")
    poses, rendered = _render_dvr_views(instance, config.dtu_views, config.resolution, views)
    points, normals = sample_surface(instance, config.pointcloud_points, views)
    dvr_format.write_dtu_scene(
        root / "dtu" / "scan1",
        rendered.rgb,
        rendered.mask,
        torch.linalg.inv(poses).numpy(),
        dvr_format.DVR_FOCAL * config.resolution / 2.0,
        points.numpy(),
        normals.numpy(),
    )


@dataclass(frozen=True)
class ObjectJob:
    """One object to render: which class, split and number (seed stream), and its folder name."""

    class_name: str
    split: str
    number: int
    name: str


def render_object(job: ObjectJob, root: Path, config: SynthShapeNetConfig) -> None:
    """Render and write one object in the requested format(s). Runs in a worker process or inline."""
    canonical, view_rng = canonical_instance(config.seed, job.class_name, job.number)
    if config.format in ("srn", "both"):
        write_srn(root, job.split, job.name, canonical, view_rng, config)
    if config.format in ("dvr", "both"):
        write_dvr(root, job.name, canonical, view_rng, config)


def _single_threaded_worker() -> None:
    # Parallelism comes from processes; torch's own thread pool would only spin against them.
    torch.set_num_threads(1)


def worker_count(config: SynthShapeNetConfig, jobs: int) -> int:
    """``--workers``, or automatically one process per core once there is enough work to pay for start-up."""
    if config.workers > 0:
        return config.workers
    return 1 if jobs < 8 else max(1, min(os.cpu_count() or 1, jobs))


def generate(config: SynthShapeNetConfig, root: Path) -> None:
    """Write the whole dataset under ``root`` (a fresh folder)."""
    classes = class_list(config.classes)
    sizes = split_sizes(config)
    jobs: List[ObjectJob] = []
    for class_name in classes:
        names = instance_names(class_name, sum(sizes.values()), config.seed)
        number = 0
        for split, count in sizes.items():
            split_names = names[number : number + count]
            jobs.extend(ObjectJob(class_name, split, number + offset, name) for offset, name in enumerate(split_names))
            number += count
            if config.format in ("dvr", "both"):
                synset_dir = root / "dvr" / dvr_format.SYNSETS[class_name][0]
                dvr_format.write_split_list(synset_dir, config.dvr_split_prefix + split, split_names)
    if config.format in ("dvr", "both"):
        dvr_format.write_metadata(root / "dvr", classes)

    workers = worker_count(config, len(jobs))
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns) as progress:
        task = progress.add_task(f"Rendering objects ({workers} process{'es' if workers > 1 else ''})", total=len(jobs))
        if workers == 1:
            threads = torch.get_num_threads()
            _single_threaded_worker()
            try:
                for job in jobs:
                    render_object(job, root, config)
                    progress.advance(task)
            finally:
                torch.set_num_threads(threads)
        else:
            # spawn, not fork: forking a process whose OpenMP pool has run can hang the child.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded_worker) as pool:
                futures = [pool.submit(render_object, job, root, config) for job in jobs]
                try:
                    for future in as_completed(futures):
                        future.result()
                        progress.advance(task)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # nothing may write into a removed folder
                    raise
    if config.dtu_scene:
        class_name = classes[0]
        number = sizes["train"] + sizes["val"]  # the first test object
        canonical, view_rng = canonical_instance(config.seed, class_name, number)
        write_dtu(root, canonical, view_rng, config)
    record = {"generator": "bts-studio synth-shapenet", **asdict(config), "out": str(config.out)}
    (root / "synth_shapenet.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv: List[str], prog: str = "bts-studio synth-shapenet") -> None:
    """Parse ``argv`` and generate the dataset atomically (a temporary sibling folder renamed at the end)."""
    config = tyro.cli(SynthShapeNetConfig, args=argv, prog=prog)
    out = config.out
    if out.exists() and not config.overwrite:
        raise SystemExit(f"{out} already exists; pass --overwrite to replace it")
    if min(config.resolution, config.train_views, config.test_views, config.dvr_views) < 1:
        raise SystemExit("--resolution and the view counts must be positive")
    write_folder_atomically(out, lambda folder: generate(config, folder), "synth-shapenet")
    print(f"wrote {out}")
