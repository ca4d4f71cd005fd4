"""Tiers 2-3: srn trains through nerfstudio's train_loop on a tiny generated class, then ns-eval's few-shot
protocol, the few-shot fitting itself and srn-interpolate run on the result."""

import json
import math
from pathlib import Path

import pytest
import torch

from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig
from bts_studio.methods.srn.method_config import srn_single_scene_trainer_config, srn_trainer_config

SMALL_MODEL = dict(latent_dim=8, phi_hidden=16, hyper_hidden=16, marcher_hidden=4, marcher_steps=3, rendering_layers=2)
VIEWS = 8


@pytest.fixture(scope="module")
def tiny_class(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.shapenet_cli import main as synth

    out = tmp_path_factory.mktemp("srn_data") / "synthetic"
    synth(
        [
            str(out),
            "--classes",
            "cars",
            "--instances",
            "4",
            "--val-instances",
            "1",
            "--test-instances",
            "1",
            "--format",
            "srn",
            "--resolution",
            "32",
            "--train-views",
            str(VIEWS),
            "--test-views",
            str(VIEWS),
        ]
    )
    return out / "srn_cars"


def _train(config, data: Path, output_dir: Path) -> Path:
    from nerfstudio.scripts.train import train_loop

    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 2
    config.steps_per_eval_batch = 1  # exercise next_eval / next_eval_image too
    config.steps_per_eval_image = 1
    config.output_dir = output_dir
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser = ShapeNetSRNDataParserConfig(few_shot_views=(0,))
    config.pipeline.datamanager.rays_per_instance = 64
    for key, value in SMALL_MODEL.items():
        setattr(config.pipeline.model, key, value)
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir() / "config.yml"


@pytest.fixture(scope="module")
def trained_run(tiny_class, tmp_path_factory) -> Path:
    config = srn_trainer_config()
    config.pipeline.datamanager.instances_per_batch = 3
    config.pipeline.datamanager.heldout_views_per_instance = 1
    config.pipeline.few_shot.input_views = (0, 3)
    config.pipeline.few_shot.num_steps = 3
    config.pipeline.few_shot.rays_per_instance = 128
    return _train(config, tiny_class, tmp_path_factory.mktemp("srn_runs"))


@pytest.fixture(scope="module")
def pipeline(trained_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, loaded, _, _ = eval_setup(trained_run)
    return loaded


def test_two_training_steps_write_a_checkpoint_with_one_code_per_instance(trained_run):
    checkpoints = sorted((trained_run.parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert checkpoints, "train_loop wrote no checkpoint"
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)["pipeline"]
    assert state["_model.latent_codes.weight"].shape == (4, SMALL_MODEL["latent_dim"])
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def test_training_batches_are_grouped_by_instance(pipeline):
    datamanager = pipeline.datamanager
    ray_bundle, batch = datamanager.next_train(0)
    instances = ray_bundle.metadata["instance_idx"].reshape(3, 64)
    assert (instances == instances[:, :1]).all() and instances[:, 0].unique().numel() == 3
    assert batch.image.shape == (3, 64, 3) and batch.image.max() <= 1  # [instances, rays, 3]
    assert tuple(ray_bundle.shape) == (3, 64) and (instances[:, 0] == batch.instances).all()
    # Held-out views never appear in training batches.
    heldout = set(datamanager.heldout_image_indices)
    assert len(heldout) == 4 and not heldout & set(batch.indices[..., 0].reshape(-1).tolist())


def test_few_shot_fitting_lowers_the_loss_with_networks_frozen(pipeline):
    from bts_studio.methods.srn.evaluation import conditioning_rays, few_shot_tasks
    from bts_studio.methods.srn.few_shot import FewShotConfig, fit_latent_codes

    model = pipeline.model
    config = FewShotConfig(input_views=(0,), num_steps=20, learning_rate=3e-2, rays_per_instance=32 * 32)
    tasks = few_shot_tasks(pipeline.datamanager, config, shots=1)
    assert len(tasks) == 1 and tasks[0].target_views == list(range(1, VIEWS)), "input view 0 is not scored"
    before = {name: value.clone() for name, value in model.state_dict().items()}
    flags = [parameter.requires_grad for parameter in model.parameters()]
    rays = conditioning_rays(pipeline.datamanager, tasks, model.device)
    codes, losses = fit_latent_codes(model, rays, config)
    assert codes.shape == (1, SMALL_MODEL["latent_dim"]) and len(losses) == 20
    # Every step sees all pixels of the input view, so the loss is deterministic: any drop is real.
    assert losses[-1] < 0.98 * losses[0], f"fitting did not lower the loss: {losses[0]} -> {losses[-1]}"
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items()), "networks changed"
    assert flags == [parameter.requires_grad for parameter in model.parameters()]


def test_ns_eval_reports_few_shot_and_heldout_metrics_as_strict_json(pipeline, tmp_path):
    results = pipeline.get_average_eval_image_metrics(output_path=tmp_path / "renders", get_std=True)
    text = json.dumps(results, allow_nan=False)
    assert results["1shot_num_images"] == VIEWS - 1 and results["2shot_num_images"] == VIEWS - 2
    assert results["train_heldout_num_images"] == 4
    for key in ("1shot_psnr", "1shot_ssim", "2shot_psnr", "2shot_ssim", "train_heldout_psnr", "psnr", "fps"):
        assert math.isfinite(results[key]), key
    assert results["psnr"] == results["1shot_psnr"]
    names = pipeline.datamanager.eval_dataset.metadata["instance_names"]
    assert set(results["per_instance"]["1shot"]) == set(names)
    assert "inputs excluded" in results["protocol"]["1shot"] and "NaN" not in text
    assert len(list((tmp_path / "renders").glob("1shot_*.png"))) == 3
    scalars = pipeline.get_average_eval_image_metrics(step=10)  # what the trainer's loggers get
    assert all(isinstance(value, (int, float)) for value in scalars.values())


def test_viewer_camera_shows_the_clicked_training_instance(pipeline):
    model = pipeline.model
    cameras = pipeline.datamanager.train_dataset.cameras
    image = 13
    instance = int(cameras.metadata["instance_idx"][image])
    camera = cameras[image : image + 1]
    camera.metadata = {"cam_idx": image}  # what viewer/utils.py::get_camera attaches
    clicked = model.get_outputs_for_camera(camera)
    direct = model.render_camera(camera, model.latent_code_for_instance(instance))
    assert torch.allclose(clicked["rgb"], direct["rgb"]) and clicked["normals"].shape == (32, 32, 3)


def test_srn_interpolate_writes_frames_video_and_camera_path(trained_run, tmp_path):
    from nerfstudio.cameras.camera_paths import get_path_from_json

    from bts_studio.methods.srn.interpolate_cli import main

    common = ["--load-config", str(trained_run), "--instance-a", "0", "--frames", "3", "--resolution", "16"]
    main(
        [
            *common,
            "--instance-b",
            "3",
            "--output",
            str(tmp_path / "frames"),
            "--output-format",
            "images",
            "--camera-path-json",
            str(tmp_path / "orbit.json"),
        ]
    )
    assert len(list((tmp_path / "frames").glob("*.png"))) == 3
    path = get_path_from_json(json.loads((tmp_path / "orbit.json").read_text()))
    assert path.shape == (3,) and int(path.height[0]) == 16
    pytest.importorskip("av")
    main([*common, "--output", str(tmp_path / "video.mp4")])
    assert (tmp_path / "video.mp4").stat().st_size > 0
    with pytest.raises(SystemExit, match="already exists"):
        main([*common, "--output", str(tmp_path / "video.mp4")])


def test_single_scene_preset_trains_on_one_instance(tiny_class, tmp_path):
    instance = sorted((tiny_class / "cars_train").iterdir())[0]
    config = srn_single_scene_trainer_config()
    config_path = _train(config, instance, tmp_path)
    assert sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))


def test_time_budget_stops_the_trainer_after_the_budget():
    from types import SimpleNamespace

    from bts_studio.methods.common.training import TimeBudget

    trainer = SimpleNamespace(stop_training=False)
    budget = TimeBudget(0.05, trainer)
    budget(step=0)  # the clock starts at the first step
    assert not trainer.stop_training
    import time

    time.sleep(0.06)
    budget(step=1)
    assert trainer.stop_training
