"""``bts-studio camera-path``: an ns-render camera path that drives forward and sways sideways from one source frame.

A bts-density render is conditioned on one image, so a fly-through starts at that image's camera and moves in
its own frame (OpenCV axes: x right, y down, z forward): at time ``s`` in [0, 1] the camera sits at
``x = sideways_m * sin(2 pi s)``, ``z = forward_m * s`` and keeps the source orientation. Render it with the same
source (``--camera-idx`` selects the train image that conditions every frame)::

    bts-studio camera-path --load-config C --source-index K --output path.json
    ns-render camera-path --load-config C --camera-path-filename path.json --camera-idx K \\
        --output-path video.mp4 --rendered-output-names rgb depth

nerfstudio camera paths hold one vertical field of view (square pixels), so the path keeps the source's vertical
field of view and image size; KITTI-360's 192x640 images have slightly non-square pixels, so the horizontal field
of view differs a little from the source's.
"""

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
import tyro

from bts_studio.core.geometry import opencv_to_opengl, to_homogeneous_pose


@dataclass
class CameraPathConfig:
    """Write a nerfstudio camera-path JSON that moves away from one training frame."""

    load_config: Path
    """config.yml of a bts-density run (its dataparser gives the source frame's pose)."""
    output: Path
    """Camera-path JSON to write."""
    source_index: int = 0
    """Training image the path starts from (pass the same number to ns-render --camera-idx)."""
    forward_m: float = 10.0
    """Metres driven forward along the source camera's optical axis."""
    sideways_m: float = 1.5
    """Amplitude of the sideways sway, metres (right is positive)."""
    frames: int = 48
    """Number of frames."""
    seconds: float = 4.0
    """Duration of the video."""
    render_height: Optional[int] = None
    """Rendered image height in pixels; default: the source image's."""
    render_width: Optional[int] = None
    """Rendered image width in pixels; default: the source image's."""
    overwrite: bool = False
    """Replace an existing output file."""


def source_camera(load_config: Path, index: int):
    """The training camera ``index`` of a run (its dataparser re-reads the data; images are not loaded)."""
    import yaml

    import bts_studio  # noqa: F401  (registers checkpoint globals; nerfstudio's registry imports our configs)

    config = yaml.load(Path(load_config).read_text(), Loader=yaml.Loader)
    datamanager = config.pipeline.datamanager
    dataparser_config = datamanager.dataparser
    if getattr(datamanager, "data", None) is not None:
        dataparser_config.data = Path(datamanager.data)
    cameras = dataparser_config.setup().get_dataparser_outputs(split="train").cameras
    if not 0 <= index < len(cameras):
        raise SystemExit(
            f"camera-path: --source-index {index} is out of range; the run has {len(cameras)} train images"
        )
    return cameras[index]


def path_poses(c2w_opengl: torch.Tensor, forward_m: float, sideways_m: float, frames: int) -> List[torch.Tensor]:
    """OpenGL camera-to-world ``[4, 4]`` poses of the path, starting at ``c2w_opengl`` ``[3, 4]``."""
    c2w_cv = to_homogeneous_pose(opencv_to_opengl(c2w_opengl.double()))
    poses = []
    for k in range(frames):
        s = k / max(frames - 1, 1)
        offset = torch.eye(4, dtype=torch.float64)
        offset[0, 3] = sideways_m * math.sin(2 * math.pi * s)
        offset[2, 3] = forward_m * s
        poses.append(opencv_to_opengl(c2w_cv @ offset))
    return poses


def write_json_atomically(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(payload, stream, indent=2)
    os.replace(temporary, path)


def main(argv: List[str], prog: str = "bts-studio camera-path") -> None:
    config = tyro.cli(CameraPathConfig, args=argv, prog=prog)
    if config.output.exists() and not config.overwrite:
        raise SystemExit(f"camera-path: {config.output} exists; pass --overwrite to replace it")
    if config.frames < 1 or config.seconds <= 0:
        raise SystemExit("camera-path: --frames must be >= 1 and --seconds > 0")
    camera = source_camera(config.load_config, config.source_index)
    height = config.render_height or int(camera.height)
    width = config.render_width or int(camera.width)
    fov_deg = math.degrees(2 * math.atan(int(camera.height) / 2 / float(camera.fy)))
    poses = path_poses(camera.camera_to_worlds, config.forward_m, config.sideways_m, config.frames)
    payload = {
        "camera_type": "perspective",
        "render_height": height,
        "render_width": width,
        "seconds": config.seconds,
        "fps": config.frames / config.seconds,
        "bts_source_index": config.source_index,
        "camera_path": [
            {"camera_to_world": pose.reshape(-1).tolist(), "fov": fov_deg, "aspect": width / height} for pose in poses
        ],
    }
    write_json_atomically(config.output, payload)
    print(
        f"Wrote {config.frames} poses to {config.output}; render with: ns-render camera-path --load-config "
        f"{config.load_config} --camera-path-filename {config.output} --camera-idx {config.source_index} "
        f"--output-path video.mp4 --rendered-output-names rgb depth"
    )
