"""``bts-studio render-bev``: bird's-eye occupancy images (BTS's "profile" figure) of a trained bts-density run.

For every evaluated image of a split it writes one PNG: the input image and the predicted depth map on the left,
the top-down occupancy on the right (x -15..15 m, z 5..30 m, density summed from camera height to 1 m below;
bright = free all the way down, dark = blocked; out-of-image space counts as density 1, so the camera's frustum
shows). Synthetic data adds a ground-truth panel from the generator's analytic scene; ``--baseline`` adds the
"Depth + 4 m" baseline's view. ``--video`` strings the frames into ``bev.mp4`` (PyAV, else mediapy/ffmpeg; with
neither it keeps the PNGs and says so).

Example::

    bts-studio render-bev --load-config outputs/kitti360/bts-density/RUN/config.yml --output-dir bev --video
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple

import numpy as np
import tyro

from bts_studio.eval.bev_panels import BevGrid
from bts_studio.utils.video import write_video

TOOL = "bts-studio render-bev"
Panel = Literal["image", "depth", "gt", "baseline"]


@dataclass
class RenderBevConfig:
    """Bird's-eye occupancy views of a bts-density run trained on kitti360-data."""

    load_config: Path
    """The run's config.yml (outputs/<experiment>/bts-density/<timestamp>/config.yml)."""
    output_dir: Path
    """Folder for the PNGs (bev_<sequence>_<frame>.png) and the video."""
    split: Literal["test", "train"] = "test"
    """Dataset split whose input images are rendered."""
    sequence: Optional[str] = None
    """Only images of this sequence (folder name); default all."""
    max_images: Optional[int] = None
    """Render at most this many images (after --stride)."""
    stride: int = 1
    """Render every stride-th image."""
    panels: Tuple[Panel, ...] = ("image", "depth", "gt")
    """Panels beside the model's BEV: image (input), depth (predicted), gt (analytic scene; synthetic data only,
    skipped with a note otherwise), baseline (Depth + 4 m from the predicted depth)."""
    grid: BevGrid = field(default_factory=BevGrid)
    """Extent and sampling of the BEV."""
    bev_scale: int = 2
    """Nearest-neighbour upscaling of the BEV panels in the composed image."""
    video: bool = False
    """Also write bev.mp4 over the rendered images."""
    fps: float = 5.0
    """Frame rate of the video."""
    overwrite: bool = False
    """Write into a non-empty output folder, replacing files of the same names."""


def render(config: RenderBevConfig) -> List[Path]:
    """Render every selected image; returns the written PNG paths."""
    import torch
    from PIL import Image
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bts_studio.eval.bev_panels import (
        colorize,
        colorize_depth,
        compose_panels,
        field_profile,
        image_to_uint8,
        scene_profile,
    )
    from bts_studio.eval.density_field import depth_plus_band_field
    from bts_studio.eval.kitti360_run import data_root, eval_images, load_pipeline, model_field
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    console = Console()
    trainer_config, pipeline = load_pipeline(config.load_config, TOOL)
    images = eval_images(pipeline, config.split)
    if config.sequence is not None:
        images = [image for image in images if image.sequence == config.sequence]
    images = images[:: max(1, config.stride)][: config.max_images]
    if not images:
        raise SystemExit(f"{TOOL}: no images selected in the {config.split} split")
    root = data_root(pipeline, config.split)
    scenes = {}
    if "gt" in config.panels:
        from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene

        for sequence in sorted({image.sequence for image in images}):
            try:
                scenes[sequence] = load_ground_truth_scene(root, sequence)
            except FileNotFoundError:
                console.print(f"[yellow]{sequence}: no analytic scene under {root / 'bts_gt'} (real data); no gt panel")
    calibrations = {}
    method = str(getattr(trainer_config, "method_name", "model"))
    config.output_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    frames: List[np.ndarray] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("bird's-eye views", total=len(images))
        for image in images:
            field_, rgb = model_field(pipeline, config.split, image)
            camera_panels = []
            if "image" in config.panels:
                camera_panels.append(("input", image_to_uint8(rgb)))
            if "depth" in config.panels:
                camera_panels.append(("depth", colorize_depth(field_.depth)))
            bev_panels = [(method, colorize(field_profile(field_, config.grid)))]
            if "baseline" in config.panels:
                baseline = depth_plus_band_field(field_)
                bev_panels.append(("depth+4m", colorize(field_profile(baseline, config.grid))))
            if "gt" in config.panels and image.sequence in scenes:
                if image.sequence not in calibrations:
                    calibrations[image.sequence] = Kitti360Calibration(root, image.sequence)
                c2w = calibrations[image.sequence].rectified_camera_to_world(image.pose_index, image.camera_id)
                profile = scene_profile(scenes[image.sequence], torch.from_numpy(c2w), config.grid, field_)
                bev_panels.append(("ground truth", colorize(profile)))
            frame = compose_panels(camera_panels, bev_panels, config.bev_scale)
            path = config.output_dir / f"bev_{image.sequence}_{image.frame_id:010d}.png"
            temporary = path.with_name(f".{path.stem}.tmp.png")
            Image.fromarray(frame).save(temporary)
            temporary.replace(path)
            written.append(path)
            if config.video:
                frames.append(frame)
            progress.advance(task)
    if config.video:
        video = config.output_dir / "bev.mp4"
        backend = write_video(frames, video, config.fps) if frames else None
        if backend is None:
            console.print(f"[yellow]no video encoder (PyAV or ffmpeg) available: kept the PNGs in {config.output_dir}")
        else:
            console.print(f"wrote {video} ({len(frames)} frames, {backend})")
    console.print(f"wrote {len(written)} bird's-eye images to {config.output_dir}")
    return written


def main(argv: Optional[List[str]] = None, prog: str = TOOL) -> None:
    """Parse arguments with tyro and render."""
    config = tyro.cli(RenderBevConfig, args=argv, prog=prog)
    if config.output_dir.exists() and any(config.output_dir.iterdir()) and not config.overwrite:
        raise SystemExit(f"{prog}: {config.output_dir} is not empty; pass --overwrite to write into it")
    render(config)


if __name__ == "__main__":
    main()
