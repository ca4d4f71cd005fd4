"""Tiers 2-3: bts-density on a tiny generated KITTI-360 set: batches, two train_loop steps, ns-eval and ns-render.

The checks that matter for the nerfstudio tools: the eval JSON is strict JSON with depth and novel-view metrics,
and renders of the checkpoint (ns-eval images, ns-render with --camera-idx) have non-constant depth.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bts_studio.core.depth_metrics import DEPTH_METRIC_NAMES

FRAMES = 6  # 4 posed frames: frame groups clamp t+1, t+10, t+11 to the sequence, as BTS does
SCALE = 0.06  # 84x23 perspective, 84x84 fisheye originals
HEIGHT, WIDTH = 64, 160  # parsed size (the encoder needs 64 pixels per side)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run

    root = tmp_path_factory.mktemp("bts_kitti360") / "KITTI-360"
    run(SynthKitti360Config(out=root, frames=FRAMES, scale=SCALE, seed=0, device="cpu"))
    return root


def tiny_config(data: Path, output_dir: Path):
    from bts_studio.methods.bts.method_config import bts_density_tiny_config

    config = bts_density_tiny_config()
    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 2
    config.steps_per_eval_batch = 1  # exercise next_eval and the per-group image evaluation too
    config.steps_per_eval_image = 1
    config.steps_per_save = 2
    config.output_dir = output_dir
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.data = data
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.target_height, dataparser.target_width, dataparser.test_every = HEIGHT, WIDTH, 4
    config.pipeline.datamanager.groups_per_batch = 2
    config.pipeline.datamanager.rays_per_group = 128
    config.pipeline.model.eval_num_rays_per_chunk = 4000  # several chunks per image
    config.pipeline.model.num_samples = 16  # BTS uses 64; 16 keeps the CPU test fast
    return config


@pytest.fixture(scope="module")
def trained_run(synthetic_root, tmp_path_factory) -> Path:
    from nerfstudio.scripts.train import train_loop

    config = tiny_config(synthetic_root, tmp_path_factory.mktemp("bts_runs"))
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir() / "config.yml"


@pytest.fixture(scope="module")
def pipeline(trained_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, loaded, _, _ = eval_setup(trained_run)
    return loaded


def test_training_writes_a_finite_checkpoint(trained_run):
    checkpoints = sorted((trained_run.parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert checkpoints, "train_loop wrote no checkpoint"
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)["pipeline"]
    assert state["_model.net.mlp_coarse.lin_in.weight"].shape == (64, 32 + 39)  # tiny preset: 32 features
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def test_batches_hold_patches_of_loss_frames_whose_rays_hit_their_pixels(pipeline):
    datamanager = pipeline.datamanager
    datamanager.setup_train()
    ray_bundle, batch = datamanager.next_train(0)
    p = batch.patch_size
    assert p == 8 and len(ray_bundle) == 2 * 128 and batch.image.shape == (2, 2, 8, 8, 3)
    assert tuple(ray_bundle.shape) == (2, 2, 8, 8) and batch.rays is ray_bundle  # [groups, patches, p, p]
    assert batch.input_image.shape == (2, 3, HEIGHT, WIDTH) and batch.render_images.shape == (2, 4, 3, HEIGHT, WIDTH)
    ray_bundle = ray_bundle.flatten()
    # Rays leave through pixel centres of their loss frame: project a point on each ray back into that camera.
    index = ray_bundle.camera_indices[:, 0]
    cameras = datamanager.train_dataset.cameras
    from bts_studio.methods.common.cameras import cameras_to_opencv

    K, c2w = cameras_to_opencv(cameras[index])
    points = ray_bundle.origins + 7.0 * ray_bundle.directions
    local = torch.einsum("nij,nj->ni", torch.linalg.inv(c2w)[:, :3, :3], points - c2w[:, :3, 3])
    uv = torch.einsum("nij,nj->ni", K, local)[:, :2] / local[:, 2:]
    patches = uv.reshape(-1, p, p, 2)
    assert torch.allclose(patches[:, :, 1:, 0] - patches[:, :, :-1, 0], torch.ones(()), atol=1e-3)  # columns
    assert torch.allclose(patches[:, 1:, :, 1] - patches[:, :-1, :, 1], torch.ones(()), atol=1e-3)  # rows
    assert torch.allclose(uv - uv.floor(), torch.full_like(uv, 0.5), atol=1e-3)
    # Targets are those pixels (colour jitter is applied to the whole group; without it they are exact).
    datamanager.config.colour_jitter = False
    ray_bundle, batch = datamanager.next_train(1)
    ray_bundle, targets = ray_bundle.flatten(), batch.image.reshape(-1, 3)
    index = ray_bundle.camera_indices[:, 0]
    K, c2w = cameras_to_opencv(cameras[index])
    local = torch.einsum(
        "nij,nj->ni", torch.linalg.inv(c2w)[:, :3, :3], ray_bundle.origins + ray_bundle.directions - c2w[:, :3, 3]
    )
    uv = (torch.einsum("nij,nj->ni", K, local)[:, :2] / local[:, 2:]).floor().long()
    for n in range(0, len(index), 37):
        image = datamanager.train_dataset.get_image_float32(int(index[n]))
        assert torch.allclose(targets[n], image[uv[n, 1], uv[n, 0]], atol=1e-6)
    # patch_pixels (the auto-mask reads the render frames there) are those pixels, as (row, column).
    assert batch.patch_pixels is not None and batch.patch_pixels.shape == (2, 2, 8, 8, 2)
    assert torch.equal(batch.patch_pixels.reshape(-1, 2), uv.flip(-1))


def test_ns_eval_reports_depth_and_novel_view_metrics_as_strict_json(pipeline, tmp_path):
    results = pipeline.get_average_eval_image_metrics(output_path=tmp_path / "renders", get_std=True)
    json.dumps(results, allow_nan=False)
    for name in (*DEPTH_METRIC_NAMES, "psnr", "ssim", "fps"):
        assert math.isfinite(results[name]) and f"{name}_std" in results, name
    assert 0 < results["a1"] <= 1 and results["abs_rel"] > 0
    depth_images = sorted((tmp_path / "renders").glob("eval_depth_*.png"))
    assert depth_images and (tmp_path / "renders" / "eval_novel_view_0000.png").exists()
    from PIL import Image

    assert np.asarray(Image.open(depth_images[0])).std() > 0, "depth render is constant"


def test_renders_of_dataset_and_clicked_cameras_have_non_constant_depth(pipeline):
    model = pipeline.model
    dataset = pipeline.datamanager.eval_dataset
    camera = dataset.cameras[0:1]
    outputs = model.get_outputs_for_camera(camera)  # resolves its own image through bts_* metadata
    for name in ("rgb", "depth", "z_depth", "accumulation"):
        assert outputs[name].shape[:2] == (HEIGHT, WIDTH), name
    assert outputs["depth"].std() > 0 and torch.allclose(outputs["accumulation"], torch.ones(()), atol=1e-4)
    assert (outputs["z_depth"] <= outputs["depth"] + 1e-4).all()
    # The viewer and ns-render --camera-idx pass only {"cam_idx": K}: the train image K conditions the render.
    viewer_camera = dataset.cameras[0:1]
    viewer_camera.metadata = {"cam_idx": 1}
    assert model.resolve_source(viewer_camera) == ("train", 1)
    clicked = model.get_outputs_for_camera(viewer_camera)
    assert not torch.allclose(clicked["depth"], outputs["depth"])


def test_viewer_finds_its_elements_and_renders_the_clicked_source(pipeline):
    from nerfstudio.cameras.cameras import CameraType
    from nerfstudio.viewer.utils import CameraState, get_camera, parse_object
    from nerfstudio.viewer.viewer_elements import ViewerElement
    from nerfstudio.viewer_legacy.server.viewer_elements import ViewerElement as LegacyViewerElement

    # The viewer evaluates every public attribute of the pipeline tree; none may fail or be expensive.
    parse_object(pipeline, ViewerElement, "Custom Elements")
    parse_object(pipeline, LegacyViewerElement, "Custom Elements")
    c2w = pipeline.datamanager.train_dataset.cameras.camera_to_worlds[2]
    state = CameraState(fov=1.0, aspect=2.0, c2w=c2w, camera_type=CameraType.PERSPECTIVE, idx=2)
    camera = get_camera(state, image_height=24).to(pipeline.model.device)
    outputs = pipeline.model.get_outputs_for_camera(camera, obb_box=None)
    assert outputs["rgb"].shape == (24, 48, 3) and outputs["depth"].std() > 0
    assert outputs["rgb"].mean() > 0.02, "viewer render is black"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render needs ffmpeg (make install adds it)")
def test_ns_render_camera_path_from_a_source_frame(trained_run, tmp_path):
    from bts_studio.eval.camera_path_cli import main as camera_path

    path = tmp_path / "path.json"
    camera_path(["--load-config", str(trained_run), "--source-index", "1", "--output", str(path), "--frames", "2"])
    assert len(json.loads(path.read_text())["camera_path"]) == 2
    out = tmp_path / "frames"
    command = [
        str(Path(sys.executable).parent / "ns-render"),
        "camera-path",
        "--load-config",
        str(trained_run),
        "--camera-path-filename",
        str(path),
        "--camera-idx",
        "1",
        "--output-path",
        str(out),
        "--output-format",
        "images",
        "--image-format",
        "png",
        "--rendered-output-names",
        "depth",
        "--downscale-factor",
        "2",
        "--colormap-options.normalize",
        "True",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    frames = sorted(out.glob("*.png"))
    assert len(frames) == 2
    assert all(np.asarray(Image.open(frame)).std() > 0 for frame in frames), "ns-render wrote constant depth"


def test_disk_and_cached_image_stores_serve_the_same_groups(pipeline):
    from bts_studio.methods.bts.datamanager import BTSDataManager
    from bts_studio.methods.common.image_store import GroupImageStore

    dataset = pipeline.datamanager.train_dataset
    groups = BTSDataManager.usable_groups(BTSDataManager.frame_groups(dataset))
    stores = {
        mode: GroupImageStore(dataset.image_filenames, groups, HEIGHT, WIDTH, 2, "cpu", mode=mode, num_workers=0)
        for mode in ("cpu", "disk")
    }
    ids, images = stores["disk"].next_batch()
    assert images.dtype == torch.uint8 and images.shape == (len(ids), 8, HEIGHT, WIDTH, 3)
    cached = stores["cpu"]
    cached.next_batch()  # fills the cache
    for row, group_id in enumerate(ids.tolist()):
        for column, image_index in enumerate(groups[group_id].tolist()):
            expected = (
                cached._cache[image_index] if image_index >= 0 else torch.zeros(HEIGHT, WIDTH, 3, dtype=torch.uint8)
            )
            assert torch.equal(images[row, column], expected)


def test_photometric_loss_prefers_the_true_geometry(pipeline, synthetic_root, monkeypatch):
    """With an oracle density (solid behind the generator's true surface, seen from the input camera) the loss is
    lower than with the surface scaled nearer or farther or with empty space: the training signal points the right
    way, so poses, intrinsics, ray generation, colour lookups and the loss agree with each other."""
    import torch.nn.functional as F

    from bts_studio.core.feature_sampling import outside_frustum, project_to_views

    datamanager, model = pipeline.datamanager, pipeline.model
    cameras = datamanager.train_dataset.cameras
    sequence = next((synthetic_root / "bts_gt").iterdir()) / "depth"

    def true_depth(image_index: int) -> torch.Tensor:
        camera, frame = int(cameras.metadata["camera_id"][image_index]), int(cameras.metadata["frame_id"][image_index])
        depth = torch.from_numpy(np.load(sequence / f"image_0{camera}" / f"{frame:010d}.npy"))
        depth = torch.nan_to_num(depth, posinf=1e4)
        return F.interpolate(depth[None, None], size=(HEIGHT, WIDTH), mode="nearest")[0, 0]

    def oracle(scale: float, inputs):
        def density(points, features, K, w2c):
            xy, z = project_to_views(points, K[:, None], w2c[:, None], HEIGHT, WIDTH)
            surface = torch.stack([true_depth(i) for i in inputs])[:, None] * scale
            d = F.grid_sample(surface, xy, mode="nearest", padding_mode="border", align_corners=False)[:, 0, 0]
            return (z[:, 0] >= d).float() * 50.0, outside_frustum(xy[:, 0], z[:, 0])

        return density

    datamanager.setup_train()
    datamanager.config.colour_jitter = False
    model.eval()
    totals = {"true": 0.0, "x1.5": 0.0, "x0.6": 0.0, "empty": 0.0}
    torch.manual_seed(1)
    for step in range(6):
        ray_bundle, batch = datamanager.next_train(step)
        inputs = datamanager._train_store.groups[batch.group_ids][:, 0].tolist()
        for name, scale in (("true", 1.0), ("x1.5", 1.5), ("x0.6", 0.6), ("empty", 1e6)):
            monkeypatch.setattr(model.net, "density", oracle(scale, inputs))
            with torch.no_grad():
                outputs = model(batch)
            totals[name] += float(model.get_loss_dict(outputs, batch)["photometric_loss"])
    assert totals["true"] < 0.85 * min(totals["x1.5"], totals["x0.6"], totals["empty"]), totals
