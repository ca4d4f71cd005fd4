"""Tiers 2-3: deepvoxels-tiny trains through nerfstudio's train_loop on a tiny generated scene; the persistent grid
is checkpointed and is what ns-eval renders from; the GAN terms reach only their own networks."""

import json
from pathlib import Path

import pytest
import torch

from bts_studio.methods.deepvoxels.method_config import deepvoxels_tiny_trainer_config

TRAIN_VIEWS, TEST_VIEWS = 8, 4


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.deepvoxels_cli import main as synth

    out = tmp_path_factory.mktemp("dv_data") / "scene"
    synth(
        [
            str(out),
            "--resolution",
            "32",
            "--train-views",
            str(TRAIN_VIEWS),
            "--validation-views",
            "2",
            "--test-views",
            str(TEST_VIEWS),
        ]
    )
    return out


@pytest.fixture(scope="module")
def trained_run(tiny_scene, tmp_path_factory) -> Path:
    from nerfstudio.scripts.train import train_loop

    config = deepvoxels_tiny_trainer_config()
    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 2
    config.steps_per_eval_batch = 1  # exercise the eval loss and image metrics too
    config.steps_per_eval_image = 1
    config.output_dir = tmp_path_factory.mktemp("dv_runs")
    config.pipeline.datamanager.data = tiny_scene
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir() / "config.yml"


@pytest.fixture(scope="module")
def pipeline(trained_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, loaded, _, _ = eval_setup(trained_run, test_mode="test")
    return loaded


def _checkpoint(trained_run: Path) -> dict:
    checkpoints = sorted((trained_run.parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert checkpoints, "train_loop wrote no checkpoint"
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=False)


def test_two_training_steps_write_the_grid_and_both_optimizers(trained_run):
    checkpoint = _checkpoint(trained_run)
    grid = checkpoint["pipeline"]["_model.deepvoxels"]
    assert grid.shape == (1, 8, 8, 8, 8) and torch.isfinite(grid).all()
    assert grid.abs().sum() > 0, "two integration steps left the grid empty"
    assert {"deepvoxels", "discriminator"} <= set(checkpoint["optimizers"])


def test_the_grid_survives_the_checkpoint_and_is_what_ns_eval_renders_from(trained_run, pipeline, tmp_path):
    from nerfstudio.scripts.eval import ComputePSNR

    model = pipeline.model
    saved = _checkpoint(trained_run)["pipeline"]["_model.deepvoxels"]
    assert torch.equal(model.deepvoxels.cpu(), saved)
    ComputePSNR(load_config=trained_run, output_path=tmp_path / "eval.json", render_output_path=tmp_path / "r").main()
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert results["num_images"] == TEST_VIEWS, "ns-eval scores the test split"
    for key in ("psnr", "ssim", "nearest_view_psnr", "nearest_view_ssim", "ms_per_frame"):
        assert results[key] == results[key] and abs(results[key]) < 1e6, key
    assert len(list((tmp_path / "r").glob("test_*.png"))) == TEST_VIEWS

    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    model.eval()
    before = model.get_outputs_for_camera(camera)["rgb"]
    assert torch.equal(before, model.get_outputs_for_camera(camera)["rgb"]), "test-time rendering is deterministic"
    # After two steps the eval-mode batch-norm statistics are still those of the initialisation, which makes the
    # renders nearly independent of their input; batch statistics (deterministic: dropout stays off) show the grid.
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.train()
    stored = model.deepvoxels.clone()
    try:
        with_stored = model.get_outputs_for_camera(camera)["rgb"]
        assert torch.equal(with_stored, model.get_outputs_for_camera(camera)["rgb"])
        model.deepvoxels.normal_(0.0, 1.0)
        changed = (with_stored - model.get_outputs_for_camera(camera)["rgb"]).abs().max()
        assert changed > 1e-3, "the render ignores the stored grid"
    finally:
        model.deepvoxels.copy_(stored)
        model.eval()


def test_outputs_of_a_viewer_camera_of_another_size(pipeline):
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    camera.height[:] = 20
    camera.width[:] = 30
    camera.cx[:] = 15.0
    camera.cy[:] = 10.0
    outputs = pipeline.model.get_outputs_for_camera(camera)
    assert outputs["rgb"].shape == (20, 30, 3) and outputs["depth"].shape == (20, 30, 1)
    assert torch.equal(outputs["accumulation"], torch.ones(20, 30, 1))
    near = pipeline.model.near_plane
    assert (outputs["z_depth"] >= near - 1e-5).all(), "depth is a convex combination of the depth planes"


def test_source_view_is_one_of_the_four_nearest_to_target_zero(pipeline):
    datamanager = pipeline.datamanager
    datamanager.setup_train()  # eval_setup in test mode still builds it; make the intent explicit
    axes = datamanager.train_c2w[:, :3, 2]
    cosine = axes @ axes.T
    for step in range(20):
        triplet = datamanager.next_train_triplet(step)
        target = int(triplet.target_indices[0])
        ranking = [i for i in cosine[target].argsort(descending=True).tolist() if i != target]
        assert triplet.source_index in ranking[:4]
        assert triplet.target_images.shape == (2, 3, 32, 32)


def test_one_backward_updates_each_network_with_its_own_gan_objective(pipeline):
    model = pipeline.model
    model.train()
    triplet = pipeline.datamanager.next_train_triplet(0)
    outputs = model.training_outputs(triplet)
    losses = model.training_losses(outputs, triplet)
    total = sum(losses.values())
    discriminator = list(model.discriminator.parameters())
    generator = list(model.get_param_groups()["deepvoxels"])

    def grads(loss, parameters):
        found = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, found, strict=True)]

    for a, b in zip(grads(total, discriminator), grads(losses["discriminator_loss"], discriminator), strict=True):
        assert torch.allclose(a, b, atol=1e-7), "the generator's adversarial term reached the discriminator"
    generator_loss = losses["l1_loss"] + losses["gan_loss"]
    for a, b in zip(grads(total, generator), grads(generator_loss, generator), strict=True):
        assert torch.allclose(a, b, atol=1e-7), "the discriminator's loss reached the generator"
    adversarial = grads(losses["gan_loss"], generator)
    assert sum(float(g.abs().sum()) for g in adversarial) > 0, "the adversarial term does not train the generator"
    model.eval()
