"""``bts-studio synth-kitti360 OUT``: a procedural street in the exact KITTI-360 on-disk format, with exact
ground truth in ``OUT/bts_gt/``.

The folder is built next to ``OUT`` under a temporary name and renamed into place when complete, so an
interrupted run never leaves a half-written dataset; an existing non-empty ``OUT`` is only replaced with
``--overwrite``.
"""

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, List, Literal, Optional

import tyro

MAX_SCALE = 2.0
MIN_SCALE = 0.02


@dataclass
class SynthKitti360Config:
    """Generate synthetic KITTI-360 sequences (rectified stereo, two fisheyes, 64-beam lidar, poses,
    calibration) plus exact ground truth (depth per perspective image, the scene's primitives)."""

    out: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="OUT")]]
    """Output folder: the KITTI-360 root (calibration/, data_poses/, data_2d_raw/, data_3d_raw/) plus bts_gt/."""
    sequences: int = 1
    """Number of sequences, named like the real ones (2013_05_28_drive_0000_sync, _0002_, _0003_, ...)."""
    frames: int = 80
    """Frames per sequence; the first 2 are a stationary start that poses.txt leaves out, as in KITTI-360."""
    scale: float = 0.52
    """Image scale: 1 = KITTI-360's 1408x376 (perspective) and 1400x1400 (fisheye); 0.52 = 732x196 and 728x728."""
    seed: int = 0
    """Seed of every random choice; equal settings give identical files."""
    world: Literal["street", "one-car"] = "street"
    """street: parked cars, trees, poles, side streets; one-car: the same facades around one parked car on the
    right, nothing else (a tiny check that a model sees behind an isolated occluder)."""
    texture_scale: float = 1.0
    """Multiplier of the procedural texture's noise cell sizes (1: the default world; larger gives blotches that
    stay visible at training resolution). An experiment knob of issue 18: how much the photometric loss sees."""
    texture_contrast: float = 1.0
    """Multiplier of the texture's deviation from mid-grey (1: the default world's flat-looking cars and walls)."""
    overwrite: bool = False
    """Replace OUT if it exists and is not empty."""
    device: str = "auto"
    """Torch device for ray casting: auto (CUDA when available), cpu, cuda, cuda:1, ..."""
    workers: int = 0
    """Processes rendering frames in parallel; 0 = automatic (one per core on CPU, 1 on CUDA); no effect on files."""


def _fail(message: str) -> SystemExit:
    return SystemExit(f"bts-studio synth-kitti360: {message}")


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise _fail(f"--device {name!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _fail(f"--device {name!r}: CUDA is not available here; use --device cpu or auto")
    return device


def validate(config: SynthKitti360Config) -> None:
    """Reject bad arguments before any work, naming the argument."""
    if config.frames < 1:
        raise _fail(f"--frames must be at least 1, got {config.frames}")
    if config.sequences < 1:
        raise _fail(f"--sequences must be at least 1, got {config.sequences}")
    if config.workers < 0:
        raise _fail(f"--workers must be 0 (automatic) or positive, got {config.workers}")
    if not MIN_SCALE <= config.scale <= MAX_SCALE:
        raise _fail(f"--scale must be in [{MIN_SCALE}, {MAX_SCALE}], got {config.scale}")
    if not config.texture_scale > 0:
        raise _fail(f"--texture-scale must be positive, got {config.texture_scale}")
    if not config.texture_contrast >= 0:
        raise _fail(f"--texture-contrast must be 0 or more, got {config.texture_contrast}")
    out = config.out
    if out.exists() and not out.is_dir():
        raise _fail(f"OUT {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise _fail(f"OUT {out} is not empty; pass --overwrite to replace it")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _fail(f"OUT {out}: cannot create its parent folder {parent} ({error.strerror})") from error
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _fail(f"OUT {out}: folder {parent} is not writable")


def _replace(staging: Path, out: Path) -> None:
    """Move the finished dataset into place; an old OUT is removed only after the new one is complete."""
    old: Optional[Path] = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old)


def run(config: SynthKitti360Config) -> Path:
    """Validate, generate into a staging folder next to OUT, and rename it into place."""
    validate(config)
    device = _resolve_device(config.device)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bts_studio.data.checks import remove_stale_staging
    from bts_studio.data.synthetic.kitti360_generate import default_workers, generate_dataset

    out = config.out.absolute()
    console = Console(stderr=True)
    for stale in remove_stale_staging(out):
        console.print(f"Removed {stale}, left by an interrupted synth-kitti360 run.")
    # The pid in the name lets a later run remove this folder if this process is killed (SIGKILL skips clean-up).
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    started = time.perf_counter()
    try:
        columns = (
            TextColumn("[bold]synth-kitti360[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("rendering", total=config.sequences * config.frames)

            def advance(sequence: str, frame: int) -> None:
                progress.update(task, advance=1, description=f"{sequence} frame {frame:4d}")

            workers = config.workers or default_workers(device, config.frames * config.sequences, config.scale)
            report = generate_dataset(
                staging,
                config.sequences,
                config.frames,
                config.scale,
                config.seed,
                device,
                workers=workers,
                on_frame=advance,
                world=config.world,
                texture_scale=config.texture_scale,
                texture_contrast=config.texture_contrast,
            )
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - started
    width, height = report.perspective_size
    console.print(
        f"Wrote {len(report.sequences)} sequence(s) x {report.frames} frames ({report.posed_frames} posed) to {out} "
        f"in {elapsed:.1f} s on {device}: perspective {width}x{height}, fisheye "
        f"{report.fisheye_size[0]}x{report.fisheye_size[1]}. Ground truth: {out / 'bts_gt'}."
    )
    if report.posed_frames < 12:
        console.print(f"Note: {report.posed_frames} posed frames; BTS frame groups (t, t+1, t+10, t+11) need 12.")
    return out


def main(argv: Optional[List[str]] = None, prog: str = "bts-studio synth-kitti360") -> None:
    config = tyro.cli(SynthKitti360Config, args=argv, prog=prog)
    run(config)
