"""``bts-studio srn-interpolate``: render the latent interpolation between two instances while the camera turns.

As in SRN's Figure 5: the code goes linearly from instance A's to instance B's while the camera orbits the
object; SRN's latent space is smooth, so the shape and colour morph continuously. Without ``--instance-b``
the video simply orbits instance A. ``--camera-path-json`` also writes the orbit as an
``ns-render camera-path`` file (``ns-render camera-path --camera-idx K`` renders the instance of training
image K along it).

Example::

    bts-studio srn-interpolate --load-config outputs/.../config.yml --instance-a 0 --instance-b 5 \\
        --output renders/interpolation.mp4
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
import torch
import tyro
from rich.progress import track

from bts_studio.utils.video import write_video


@dataclass
class SRNInterpolateConfig:
    """Render a latent-code interpolation video of a trained ``srn`` model."""

    load_config: Path
    """The run's ``config.yml`` (from ns-train)."""
    instance_a: str
    """First instance: its index in the training split or its folder name."""
    instance_b: Optional[str] = None
    """Second instance (index or name); omit it to orbit instance A only."""
    output: Path = Path("renders/srn_interpolation.mp4")
    """Video file (.mp4), or a folder of PNG frames with --output-format images."""
    output_format: Literal["video", "images"] = "video"
    """Write an H.264 video (needs PyAV) or numbered PNG frames."""
    frames: int = 96
    """Number of frames; the code moves from A to B over all of them."""
    fps: int = 24
    """Frame rate of the video."""
    turns: float = 1.0
    """Camera revolutions around the object during the video."""
    elevation_deg: float = 20.0
    """Camera elevation above the object's horizontal plane (the world is z-up)."""
    radius: Optional[float] = None
    """Camera distance from the origin; None: the mean distance of the training cameras."""
    resolution: Optional[int] = None
    """Square frame size in pixels; None: the training images' height. The focal length scales with it."""
    camera_path_json: Optional[Path] = None
    """Also write the orbit as an ns-render camera path here."""
    overwrite: bool = False
    """Replace existing outputs."""


def resolve_instance(text: str, names: List[str], count: int) -> int:
    """An instance given by index or by folder name."""
    if text in names:
        return names.index(text)
    try:
        index = int(text)
    except ValueError:
        message = f"unknown instance {text!r}: give an index in [0, {count}) or one of the folder names"
        raise SystemExit(message) from None
    if not 0 <= index < count:
        raise SystemExit(f"instance index {index} is out of range: the model has {count} training instances")
    return index


def write_images(frames: List[np.ndarray], folder: Path) -> None:
    """Write numbered PNG frames into ``folder`` (built next to it, then renamed)."""
    from PIL import Image

    temporary = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    temporary.mkdir(parents=True, exist_ok=False)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(temporary / f"{index:05d}.png")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(temporary, folder)


def main(argv: List[str], prog: str = "bts-studio srn-interpolate") -> None:
    """Parse ``argv`` and render the video."""
    config = tyro.cli(SRNInterpolateConfig, args=argv, prog=prog)
    for target in (config.output, config.camera_path_json):
        if target is not None and target.exists() and not config.overwrite:
            raise SystemExit(f"{target} already exists; pass --overwrite to replace it")
    if config.frames < 1 or config.fps < 1:
        raise SystemExit("--frames and --fps must be positive")

    from nerfstudio.utils.eval_utils import eval_setup

    from bts_studio.methods.srn.model import SRNModel
    from bts_studio.methods.srn.orbit import camera_path_json, orbit_camera_to_worlds, orbit_cameras

    _, pipeline, _, _ = eval_setup(config.load_config, test_mode="inference")
    model = pipeline.model
    if not isinstance(model, SRNModel) or model.config.single_scene:
        raise SystemExit(f"{config.load_config} is not a multi-instance srn run")
    names = model.instance_names
    first = resolve_instance(config.instance_a, names, model.num_instances)
    second = first if config.instance_b is None else resolve_instance(config.instance_b, names, model.num_instances)

    train_cameras = pipeline.datamanager.train_dataset.cameras
    size = config.resolution or int(train_cameras.height[0])
    focal = float(train_cameras.fx[0]) * size / float(train_cameras.height[0])
    radius = config.radius or float(train_cameras.camera_to_worlds[:, :3, 3].norm(dim=-1).mean())
    c2w = orbit_camera_to_worlds(config.frames, radius, config.elevation_deg, config.turns)
    cameras = orbit_cameras(c2w, focal, size).to(model.device)

    code_a, code_b = model.latent_code_for_instance(first), model.latent_code_for_instance(second)
    weights = torch.linspace(0.0, 1.0, config.frames) if config.frames > 1 else torch.zeros(1)
    frames = []
    for index in track(range(config.frames), description="Rendering the interpolation"):
        code = torch.lerp(code_a, code_b, float(weights[index]))
        rgb = model.render_camera(cameras[index : index + 1], code)["rgb"]
        frames.append((rgb.clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8))

    config.output.parent.mkdir(parents=True, exist_ok=True)
    if config.output_format == "video":
        if write_video(frames, config.output, config.fps) is None:
            raise SystemExit(f"no video encoder worked for {config.output}; use --output-format images")
    else:
        write_images(frames, config.output)
    print(f"wrote {config.output} ({config.frames} frames, instance {first} -> {second})")
    if config.camera_path_json is not None:
        config.camera_path_json.parent.mkdir(parents=True, exist_ok=True)
        temporary = config.camera_path_json.with_name(f".{config.camera_path_json.name}.partial-{os.getpid()}")
        temporary.write_text(json.dumps(camera_path_json(c2w, focal, size, config.fps), indent=2))
        os.replace(temporary, config.camera_path_json)
        print(f"wrote {config.camera_path_json} (ns-render camera-path --camera-path-filename ... --camera-idx K)")
