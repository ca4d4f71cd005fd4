"""``bts-studio camera-path``: an ns-render camera path that starts exactly at one source view and drives on.

A render of an image-conditioned method is conditioned on one image, so a fly-through starts at that image's camera
(same pose, same intrinsics, principal point included) and moves from there. By default the camera moves in its
**level frame** (heading only, world z up, docs/conventions.md): at time ``s`` in [0, 1] it sits
``forward_m * s`` ahead along its heading and ``sideways_m * sin(2 pi s)`` to the right, at constant height, and
keeps the source orientation. ``--follow-tilt`` moves along the camera's own axes instead (a camera tilted 6 degrees
down then ends 1.05 m lower after 10 m).

The JSON is nerfstudio's camera-path format plus ``"bts_source"`` (the conditioning image) and ``"bts_intrinsics"``
(fx, fy, cx, cy of the rendered size). ``ns-render camera-path`` reads both when our pipeline is loaded
(``eval/ns_render_paths.py``), so no ``--camera-idx`` is needed::

    bts-studio camera-path --load-config C --source-index K --output path.json
    ns-render camera-path --load-config C --camera-path-filename path.json \\
        --output-path video.mp4 --rendered-output-names rgb depth

Other viewers of the JSON (nerfstudio's own loader) see the source's vertical field of view with a centred
principal point.
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

from bts_studio.core.geometry import to_homogeneous_pose
from bts_studio.eval.ns_render_paths import level_frame


@dataclass
class CameraPathConfig:
    """Write a nerfstudio camera-path JSON that moves away from one training frame."""

    load_config: Path
    """config.yml of a run (bts-density, srn, dvr, deepvoxels; its dataparser gives the source frame's pose)."""
    output: Path
    """Camera-path JSON to write."""
    source_index: int = 0
    """Training image the path starts from and is conditioned on (stored in the JSON)."""
    forward_m: Optional[float] = None
    """Distance moved forward along the source camera's heading, in the run's world units; default: 10 m for a
    street run (bts-density), else 0.2 x the source camera's distance to the object at the world origin."""
    sideways_m: Optional[float] = None
    """Amplitude of the sideways sway (right is positive), in world units; default: 1.5 m for a street run, else
    0.03 x the source camera's distance to the object."""
    frames: int = 48
    """Number of frames."""
    seconds: float = 4.0
    """Duration of the video."""
    render_height: Optional[int] = None
    """Rendered image height in pixels; default: the source image's."""
    render_width: Optional[int] = None
    """Rendered image width in pixels; default: the source image's."""
    follow_tilt: bool = False
    """Move along the camera's own (tilted) axes instead of its level frame."""
    overwrite: bool = False
    """Replace an existing output file."""


def load_run_config(load_config: Path):
    """A run's ``config.yml`` as nerfstudio's config objects (the classes they name are imported)."""
    import yaml

    import bts_studio  # noqa: F401  (registers checkpoint globals; nerfstudio's registry imports our configs)

    return yaml.load(Path(load_config).read_text(), Loader=yaml.Loader)


def source_camera(run_config, index: int):
    """The training camera ``index`` of a run (its dataparser re-reads the data; images are not loaded)."""
    datamanager = run_config.pipeline.datamanager
    dataparser_config = datamanager.dataparser
    if getattr(datamanager, "data", None) is not None:
        dataparser_config.data = Path(datamanager.data)
    cameras = dataparser_config.setup().get_dataparser_outputs(split="train").cameras
    if not 0 <= index < len(cameras):
        raise SystemExit(
            f"camera-path: --source-index {index} is out of range; the run has {len(cameras)} train images"
        )
    return cameras[index]


STREET_PATH_M = (10.0, 1.5)
"""Default forward and sideways lengths of a street run's path, metres."""
OBJECT_PATH_FRACTIONS = (0.2, 0.03)
"""Default forward and sideways lengths of an object run's path, as fractions of the camera's distance to the
object (object-centred methods put it at the world origin): 10 m would fly through a unit-sized object."""


def path_lengths(config: CameraPathConfig, run_config, c2w_opengl: torch.Tensor) -> tuple[float, float]:
    """``(forward, sideways)`` of the path in world units: the given ones, else the defaults of the run's scene
    kind (its pipeline's ``scene_kind``, as for the ns-render paths)."""
    if getattr(run_config.pipeline._target, "scene_kind", "object") == "street":
        forward, sideways = STREET_PATH_M
    else:
        distance = float(c2w_opengl[:3, 3].norm())
        forward, sideways = (fraction * distance for fraction in OBJECT_PATH_FRACTIONS)
    return (
        config.forward_m if config.forward_m is not None else forward,
        config.sideways_m if config.sideways_m is not None else sideways,
    )


def path_poses(
    c2w_opengl: torch.Tensor, forward_m: float, sideways_m: float, frames: int, follow_tilt: bool = False
) -> List[torch.Tensor]:
    """OpenGL camera-to-world ``[4, 4]`` poses of the path (module docstring); pose 0 is ``c2w_opengl`` ``[3, 4]``."""
    c2w = to_homogeneous_pose(c2w_opengl.double())
    if follow_tilt:
        right, forward = c2w[:3, 0], -c2w[:3, 2]
    else:
        right, _, forward = level_frame(c2w[:3])
    poses = []
    for k in range(frames):
        s = k / max(frames - 1, 1)
        pose = c2w.clone()
        pose[:3, 3] = c2w[:3, 3] + forward * (forward_m * s) + right * (sideways_m * math.sin(2 * math.pi * s))
        poses.append(pose)
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
    run_config = load_run_config(config.load_config)
    camera = source_camera(run_config, config.source_index)
    forward_m, sideways_m = path_lengths(config, run_config, camera.camera_to_worlds)
    source_height, source_width = int(camera.height), int(camera.width)
    height = config.render_height or source_height
    width = config.render_width or source_width
    sx, sy = width / source_width, height / source_height
    intrinsics = {
        "fx": float(camera.fx) * sx,
        "fy": float(camera.fy) * sy,
        "cx": float(camera.cx) * sx,
        "cy": float(camera.cy) * sy,
    }
    fov_deg = math.degrees(2 * math.atan(height / 2 / intrinsics["fy"]))
    poses = path_poses(camera.camera_to_worlds, forward_m, sideways_m, config.frames, config.follow_tilt)
    payload = {
        "camera_type": "perspective",
        "render_height": height,
        "render_width": width,
        "seconds": config.seconds,
        "fps": config.frames / config.seconds,
        "bts_source": {"split": "train", "index": config.source_index},
        "bts_source_index": config.source_index,
        "bts_intrinsics": intrinsics,
        "camera_path": [
            {"camera_to_world": pose.reshape(-1).tolist(), "fov": fov_deg, "aspect": width / height} for pose in poses
        ],
    }
    write_json_atomically(config.output, payload)
    print(
        f"Wrote {config.frames} poses to {config.output} (conditioned on train image {config.source_index}); render "
        f"with: ns-render camera-path --load-config {config.load_config} --camera-path-filename {config.output} "
        f"--output-path video.mp4 --rendered-output-names rgb depth"
    )
