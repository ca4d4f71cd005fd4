"""``bts-studio predict``: depth, bird's-eye occupancy, a fly-through video and 3D exports from anyone's photos.

Example::

    bts-studio predict --load-config outputs/kitti360/bts-density/RUN/config.yml photo.jpg dashcam/ drive.mp4 \\
        --output-dir predictions --fov-deg 70 --export voxels pointcloud mesh

Per input image (or video frame) ``NAME`` it writes, into ``OUT/NAME/``, each file atomically:

* ``depth.npy`` (float32 z-depth in metres, ``[h, w]`` at the model's input size) and ``depth.png``
  (inverse depth, magma, near bright);
* ``panel.png``: the input and the depth map on the left, the bird's-eye occupancy on the right (x -15..15 m,
  z 5..30 m, as ``render-bev``);
* ``flythrough.mp4``: novel views (colour | depth) moving forward and swaying sideways from the photo's camera
  (``camera-path``'s path);
* with ``--export``: ``voxels.npz`` + ``voxels.ply`` (density over the frustum, occupied voxel centres),
  ``pointcloud.ply`` (depth map back-projected), ``mesh.ply`` / ``mesh.obj`` (marching cubes);
* ``prediction.json``: the intrinsics used and where they came from, the crop and resize applied, the field of view
  against the training camera's, warnings, and the files written.

Intrinsics and fitting to the training size: ``bts_studio.eval.predict_intrinsics``. Inputs and bad-file rules:
``bts_studio.eval.predict_inputs``. Model loading without the training data: ``bts_studio.eval.predict_model``.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
import tyro

from bts_studio.eval.bev_panels import BevGrid
from bts_studio.eval.predict_inputs import BadInputError, InputFrame
from bts_studio.eval.predict_intrinsics import Intrinsics, IntrinsicsError, TrainingCamera

TOOL = "bts-studio predict"
Export = Literal["voxels", "pointcloud", "mesh"]


@dataclass
class PredictConfig:
    """Predict depth, bird's-eye occupancy, a fly-through and 3D exports for images, folders and videos."""

    inputs: tyro.conf.Positional[Tuple[Path, ...]]
    """Image files, folders of images (not recursive) and video files."""
    output_dir: Path
    """Folder that receives one sub-folder per image (video frames: <video>_<frame>)."""
    load_config: Optional[Path] = None
    """A bts-density run's config.yml (its newest checkpoint is used; the training data is not needed)."""
    checkpoint: Optional[Path] = None
    """A step-*.ckpt instead of --load-config (its run's config.yml is used when it sits in RUN/nerfstudio_models/)."""
    fx: Optional[float] = None
    """Focal length in pixels of the given image (x). Wins over every other intrinsics source."""
    fy: Optional[float] = None
    """Focal length in pixels (y); default fx."""
    cx: Optional[float] = None
    """Principal point x in pixels, OpenCV convention (centre of the first pixel is 0); default the image centre."""
    cy: Optional[float] = None
    """Principal point y in pixels, OpenCV convention; default the image centre."""
    fov_deg: Optional[float] = None
    """Horizontal field of view in degrees (square pixels, centred principal point)."""
    calibration: Optional[Path] = None
    """A KITTI-360 perspective.txt or KITTI calib_cam_to_cam.txt / calib.txt."""
    calibration_camera: Optional[int] = None
    """Camera index in --calibration (default: P_rect_00, else P_rect_02 / P2)."""
    use_exif: bool = True
    """Read the focal length from EXIF when no intrinsics are given."""
    crop_vertical: float = 0.5
    """Where the crop band to the training aspect sits: 0 top, 0.5 centre, 1 bottom."""
    training_size: Optional[Tuple[int, int]] = None
    """(height, width) the model was trained at; default from the run's config (192 640 for a bare checkpoint)."""
    export: Tuple[Export, ...] = ()
    """3D exports: voxels (density .npz + occupied centres .ply), pointcloud (.ply), mesh (marching cubes)."""
    mesh_formats: Tuple[Literal["ply", "obj"], ...] = ("ply", "obj")
    """File formats of --export mesh."""
    voxel_size: float = 0.25
    """Edge of an export voxel, metres."""
    export_max_depth: float = 30.0
    """Exports cover the frustum from the model's near plane to this z-depth, metres."""
    bev: bool = True
    """Write panel.png (input, depth, bird's-eye occupancy)."""
    grid: BevGrid = field(default_factory=BevGrid)
    """Extent and sampling of the bird's-eye view (--grid.tilt-deg: the camera's downward pitch)."""
    flythrough_frames: int = 24
    """Frames of flythrough.mp4; 0 writes no video."""
    forward_m: float = 10.0
    """Metres the fly-through moves forward."""
    sideways_m: float = 1.5
    """Amplitude of the fly-through's sideways sway, metres."""
    fps: float = 12.0
    """Frame rate of flythrough.mp4."""
    video_stride: int = 1
    """Use every n-th frame of a video file or folder."""
    max_frames: Optional[int] = None
    """Predict on at most this many frames in all."""
    skip_bad: bool = False
    """Skip unreadable, empty or non-RGB files (listed at the end) instead of stopping at the first."""
    overwrite: bool = False
    """Replace existing output files."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the model runs (auto: the GPU when there is one)."""


# ---------------------------------------------------------------------------------------------- intrinsics
def resolve_intrinsics(
    config: PredictConfig, width: int, height: int, exif: Dict[str, Any], training: TrainingCamera
) -> Intrinsics:
    """The image's intrinsics from the first source given (see ``predict_intrinsics``)."""
    from bts_studio.eval import predict_intrinsics as pi

    if config.fx is not None:
        return pi.from_flags(width, height, config.fx, config.fy, config.cx, config.cy)
    if any(value is not None for value in (config.fy, config.cx, config.cy)):
        raise IntrinsicsError("--fy, --cx and --cy need --fx")
    if config.fov_deg is not None:
        return pi.from_fov(width, height, config.fov_deg)
    if config.calibration is not None:
        return pi.from_calibration(config.calibration, width, height, config.calibration_camera)
    if config.use_exif:
        found = pi.from_exif(exif, width, height)
        if found is not None:
            return found
    return pi.default_intrinsics(width, height, training.hfov_deg)


# ------------------------------------------------------------------------------------------------ one image
@dataclass
class Prediction:
    """Everything predicted for one fitted image."""

    source: Any
    depth: torch.Tensor
    field: Any


def predict_depth(model, image: torch.Tensor, K: torch.Tensor) -> Prediction:
    """Encode the fitted image at the origin (OpenCV identity pose) and render its own z-depth, as ns-eval does."""
    from bts_studio.eval.density_field import FrameField
    from bts_studio.methods.bts.inference import density_in_camera, depth_map, encode_source

    source = encode_source(model, image, K, torch.eye(4))
    depth = depth_map(model, source).float()

    def density(points_camera: torch.Tensor) -> torch.Tensor:
        return density_in_camera(model, source, points_camera.to(source.K.device))

    return Prediction(source, depth, FrameField(density, depth, source.K.float()))


def flythrough_frames(model, source, frames: int, forward_m: float, sideways_m: float) -> List[np.ndarray]:
    """Colour over depth of novel views along ``camera-path``'s forward-and-sideways path from the source camera."""
    from bts_studio.core.geometry import opencv_to_opengl
    from bts_studio.eval.bev_panels import colorize_depth, image_to_uint8
    from bts_studio.eval.camera_path_cli import path_poses
    from bts_studio.methods.common.cameras import opencv_to_cameras

    start = opencv_to_opengl(torch.eye(4, dtype=torch.float64)[:3])
    K = source.K.float().cpu()
    images = []
    for pose in path_poses(start, forward_m, sideways_m, frames):
        c2w_opencv = opencv_to_opengl(pose[:3]).float()  # path_poses speaks nerfstudio's OpenGL
        camera = opencv_to_cameras(K[None], c2w_opencv[None], source.width, source.height)
        camera = camera.to(source.features.device)
        outputs = model.render_camera(camera, source)
        rgb = image_to_uint8(outputs["rgb"].permute(2, 0, 1))
        depth = colorize_depth(outputs["z_depth"][..., 0], model.config.near, model.config.far)
        frame = np.concatenate([rgb, depth], axis=0)
        images.append(frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2])
    return images


def export_3d(config: PredictConfig, model, prediction: Prediction, out: Path) -> Dict[str, Any]:
    """The ``--export`` files of one image; returns what was written (paths and counts)."""
    from bts_studio.eval import predict_exports as ex

    written: Dict[str, Any] = {}
    source, K = prediction.source, prediction.source.K.float().cpu()
    size = (source.height, source.width)
    if "voxels" in config.export or "mesh" in config.export:
        grid = ex.frustum_grid(
            K, source.width, source.height, model.config.near, config.export_max_depth, config.voxel_size
        )
        voxels = ex.sample_voxels(prediction.field, grid)
        if "voxels" in config.export:
            ex.write_voxels_npz(out / "voxels.npz", voxels, K, size, config.overwrite)
            centres = voxels.centres()
            ex.write_point_cloud(
                out / "voxels.ply", centres, ex.colours_from_image(centres, K, source.image), config.overwrite
            )
            written["voxels"] = {
                "npz": "voxels.npz",
                "ply": "voxels.ply",
                "grid_zyx": list(grid.shape),
                "occupied": int(len(centres)),
            }
        if "mesh" in config.export:
            mesh = ex.marching_cubes_mesh(voxels)
            if mesh is None:
                written["mesh"] = "no surface: no density crosses the threshold inside the frustum"
            else:
                mesh.visual.vertex_colors = ex.colours_from_image(np.asarray(mesh.vertices), K, source.image)
                for suffix in config.mesh_formats:
                    ex.write_mesh(out / f"mesh.{suffix}", mesh, config.overwrite)
                written["mesh"] = {
                    "files": [f"mesh.{s}" for s in config.mesh_formats],
                    "vertices": int(len(mesh.vertices)),
                    "faces": int(len(mesh.faces)),
                }
    if "pointcloud" in config.export:
        points, _ = ex.depth_point_cloud(prediction.depth, K, config.export_max_depth)
        ex.write_point_cloud(
            out / "pointcloud.ply", points, ex.colours_from_image(points, K, source.image), config.overwrite
        )
        written["pointcloud"] = {"ply": "pointcloud.ply", "points": int(len(points))}
    return written


def predict_one(config: PredictConfig, loaded, pixels: np.ndarray, exif: Dict[str, Any], out: Path) -> Dict[str, Any]:
    """Every output of one decoded RGB image; returns its ``prediction.json`` payload."""
    from bts_studio.eval.bev_panels import colorize, colorize_depth, compose_panels, field_profile, image_to_uint8
    from bts_studio.eval.predict_intrinsics import fit_to_training, fov_comparison, sanity_warnings
    from bts_studio.eval.predict_outputs import write_json, write_npy, write_png
    from bts_studio.utils.video import write_video

    model, training = loaded.model, loaded.training
    height, width = pixels.shape[:2]
    intrinsics = resolve_intrinsics(config, width, height, exif, training)
    warnings = sanity_warnings(intrinsics)
    if intrinsics.is_default:
        warnings.insert(0, f"no intrinsics given: using the {intrinsics.source}")
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    fitted = fit_to_training(image, intrinsics, training, config.crop_vertical)
    fov, fov_warnings = fov_comparison(fitted.K, training.size, training)
    warnings.extend(fov_warnings)
    prediction = predict_depth(model, fitted.image, fitted.K)
    depth = prediction.depth.cpu()
    near, far = model.config.near, model.config.far

    files = {"depth_npy": "depth.npy", "depth_png": "depth.png"}
    write_npy(out / "depth.npy", depth.numpy().astype(np.float32), config.overwrite)
    depth_colours = colorize_depth(depth, near, far)
    write_png(out / "depth.png", depth_colours, config.overwrite)
    if config.bev:
        bev = colorize(field_profile(prediction.field, config.grid))
        panel = compose_panels(
            [("input", image_to_uint8(fitted.image)), ("depth", depth_colours)], [("bird's-eye", bev)]
        )
        write_png(out / "panel.png", panel, config.overwrite)
        files["panel"] = "panel.png"
    if config.flythrough_frames > 0:
        frames = flythrough_frames(
            model, prediction.source, config.flythrough_frames, config.forward_m, config.sideways_m
        )
        video = out / "flythrough.mp4"
        if video.exists() and not config.overwrite:
            raise FileExistsError(f"{video} exists; pass --overwrite to replace it")
        backend = write_video(frames, video, config.fps)
        if backend is None:
            warnings.append("no video encoder (PyAV, ffmpeg or OpenCV) worked: no flythrough.mp4")
        else:
            files["flythrough"] = "flythrough.mp4"
    files.update(export_3d(config, model, prediction, out))
    valid = depth[torch.isfinite(depth)]
    payload = {
        "model": {"method": loaded.method_name, "checkpoint": str(loaded.checkpoint), "step": loaded.step},
        "input_size_wh": [width, height],
        "intrinsics": {
            "source": intrinsics.source,
            "K_input": intrinsics.K.tolist(),
            "K_used": fitted.K.double().tolist(),
            "units": "pixels, nerfstudio convention (OpenCV cx, cy + 0.5); K_used is for the depth map's size",
        },
        "fit": {**fitted.report(), "size_hw": list(training.size)},
        "field_of_view": {**fov, "training_camera": training.source},
        "depth_m": {"min": float(valid.min()), "median": float(valid.median()), "max": float(valid.max())},
        "warnings": warnings,
        "files": files,
    }
    write_json(out / "prediction.json", payload, config.overwrite)
    return payload


# ------------------------------------------------------------------------------------------------- the loop
def _frames_to_predict(config: PredictConfig, console) -> Tuple[List[InputFrame], List[str]]:
    """Expand the inputs and check every image file's header; returns the usable frames and the skipped ones."""
    from bts_studio.eval.predict_inputs import check_image, expand_inputs

    try:
        frames = expand_inputs(config.inputs, config.video_stride, config.max_frames)
    except BadInputError as error:
        raise SystemExit(f"{TOOL}: {error}") from error
    usable, bad = [], []
    for frame in frames:
        if frame.frame_index is not None:
            usable.append(frame)
            continue
        try:
            check_image(frame.path)
            usable.append(frame)
        except BadInputError as error:
            if not config.skip_bad:
                raise SystemExit(f"{TOOL}: {error}\n(pass --skip-bad to skip such files)") from error
            console.print(f"[yellow]skipping {error}")
            bad.append(str(error))
    groups = {frame.group for frame in frames if frame.group is not None}
    for group in sorted(groups):
        if not any(frame.group == group for frame in usable):
            raise SystemExit(f"{TOOL}: {group}: nothing readable (every image in it is bad: see above)")
    if not usable:
        raise SystemExit(f"{TOOL}: nothing readable among the inputs")
    return usable, bad


def _check_outputs(config: PredictConfig, frames: List[InputFrame]) -> None:
    if config.overwrite:
        return
    taken = [f for f in frames if (config.output_dir / f.name).is_dir() and any((config.output_dir / f.name).iterdir())]
    if taken:
        names = ", ".join(str(config.output_dir / f.name) for f in taken[:3])
        raise SystemExit(f"{TOOL}: {names}{' ...' if len(taken) > 3 else ''} already hold outputs; pass --overwrite")


def _decoded(frames: List[InputFrame]):
    """Yield ``(frame, LoadedImage | BadInputError)`` in order, decoding each video once, sequentially."""
    from bts_studio.eval.predict_inputs import LoadedImage, read_image, read_video_frames

    index = 0
    while index < len(frames):
        frame = frames[index]
        if frame.frame_index is None:
            try:
                yield frame, read_image(frame.path)
            except BadInputError as error:
                yield frame, error
            index += 1
            continue
        run = [f for f in frames[index:] if f.path == frame.path and f.frame_index is not None]
        by_index = {f.frame_index: f for f in run}
        try:
            for position, pixels in read_video_frames(frame.path, list(by_index)):
                yield by_index[position], LoadedImage(pixels)
        except BadInputError as error:
            yield frame, error
        index += len(run)


def run(config: PredictConfig) -> List[Dict[str, Any]]:
    """Predict on every input; returns the ``prediction.json`` payloads."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bts_studio.eval.predict_model import load_model

    console = Console()
    if not config.inputs:
        raise SystemExit(f"{TOOL}: name at least one image, folder or video to predict on")
    if config.fx is None and any(v is not None for v in (config.fy, config.cx, config.cy)):
        raise SystemExit(f"{TOOL}: --fy, --cx and --cy need --fx")
    frames, bad = _frames_to_predict(config, console)
    _check_outputs(config, frames)
    device = None if config.device == "auto" else torch.device(config.device)
    loaded = load_model(config.load_config, config.checkpoint, config.training_size, device)
    training = loaded.training
    console.print(
        f"{loaded.method_name} (step {loaded.step}) on {loaded.model.device}; training images "
        f"{training.size[1]}x{training.size[0]}, horizontal field of view {training.hfov_deg:.1f} deg "
        f"({training.source})"
    )
    payloads = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("predicting", total=len(frames))
        for frame, decoded in _decoded(frames):
            if isinstance(decoded, BadInputError):
                if not config.skip_bad:
                    raise SystemExit(f"{TOOL}: {decoded}\n(pass --skip-bad to skip such files)")
                console.print(f"[yellow]skipping {decoded}")
                bad.append(str(decoded))
                progress.advance(task)
                continue
            out = config.output_dir / frame.name
            try:
                payload = predict_one(config, loaded, decoded.pixels, decoded.exif, out)
            except IntrinsicsError as error:
                raise SystemExit(f"{TOOL}: {frame.path}: {error}") from error
            except FileExistsError as error:
                raise SystemExit(f"{TOOL}: {error}") from error
            fit, fov = payload["fit"], payload["field_of_view"]
            what = "; ".join(fit["notes"]) or "already at the training size"
            console.print(
                f"{frame.name}: intrinsics from {payload['intrinsics']['source']}; {what}; horizontal field of view "
                f"{fov['hfov_deg']:.1f} deg (training {fov['training_hfov_deg']:.1f}, "
                f"{fov['hfov_difference_deg']:+.1f})"
            )
            for warning in payload["warnings"]:
                console.print(f"[yellow]  warning: {warning}")
            payloads.append(payload)
            progress.advance(task)
    console.print(f"wrote predictions for {len(payloads)} image(s) to {config.output_dir}")
    if bad:
        console.print(f"[yellow]skipped {len(bad)} bad input(s):")
        for line in bad:
            console.print(f"[yellow]  {line}")
    if not payloads:
        raise SystemExit(f"{TOOL}: nothing readable among the inputs")
    return payloads


def main(argv: Optional[List[str]] = None, prog: str = TOOL) -> None:
    """Parse arguments with tyro and predict."""
    config = tyro.cli(PredictConfig, args=argv, prog=prog)
    if config.voxel_size <= 0 or config.export_max_depth <= 0 or not math.isfinite(config.voxel_size):
        raise SystemExit(f"{prog}: --voxel-size and --export-max-depth must be positive")
    run(config)


if __name__ == "__main__":
    main()
