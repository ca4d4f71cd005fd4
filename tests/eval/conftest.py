"""Shared fixtures of the evaluation tests: one tiny synthetic KITTI-360 set and one two-step bts-density-tiny run.

Session-scoped, so eval-occupancy, render-bev and predict read the same run instead of each generating and training
their own (the tests only read them).
"""

from pathlib import Path

import pytest

FRAMES = 6  # 4 posed frames
SCALE = 0.06  # 84x23 perspective originals
HEIGHT, WIDTH = 64, 160  # parsed size (the encoder needs 64 pixels per side)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run

    root = tmp_path_factory.mktemp("eval_kitti360") / "KITTI-360"
    run(SynthKitti360Config(out=root, frames=FRAMES, scale=SCALE, seed=0, device="cpu"))
    return root


@pytest.fixture(scope="session")
def trained_config(synthetic_root, tmp_path_factory) -> Path:
    from nerfstudio.scripts.train import train_loop

    from bts_studio.methods.bts.method_config import bts_density_tiny_config

    config = bts_density_tiny_config()
    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 2
    config.steps_per_save = 2
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 1000
    config.output_dir = tmp_path_factory.mktemp("eval_runs")
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.data = synthetic_root
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.target_height, dataparser.target_width, dataparser.test_every = HEIGHT, WIDTH, 2
    config.pipeline.datamanager.groups_per_batch = 2
    config.pipeline.datamanager.rays_per_group = 128
    config.pipeline.model.num_samples = 16
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir() / "config.yml"
