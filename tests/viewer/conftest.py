"""Tiny trained checkpoints of bts-density and srn for the viewer and ns-render tests (one training step each)."""

from pathlib import Path

import pytest

BTS_SIZE = (
    128,
    320,
)  # parsed KITTI-360 size; 128 rows so that ns-render dataset --downscale-factor 2 still feeds the encoder 64


def train_tiny_bts(root: Path) -> Path:
    """Generate a 6-frame synthetic KITTI-360 sequence under ``root`` and train bts-density-tiny one step."""
    from nerfstudio.scripts.train import train_loop

    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run
    from bts_studio.methods.bts.method_config import bts_density_tiny_config

    data = root / "KITTI-360"
    run(SynthKitti360Config(out=data, frames=6, scale=0.06, seed=0, device="cpu"))
    config = bts_density_tiny_config()
    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 1
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 1000
    config.steps_per_save = 1
    config.output_dir = root / "runs"
    config.pipeline.datamanager.data = data
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.target_height, dataparser.target_width, dataparser.test_every = *BTS_SIZE, 4
    config.pipeline.datamanager.groups_per_batch = 1
    config.pipeline.datamanager.rays_per_group = 64
    config.pipeline.datamanager.num_workers = 0
    config.pipeline.model.eval_num_rays_per_chunk = 4096
    config.pipeline.model.num_samples = 16
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir() / "config.yml"


def train_tiny_srn(root: Path) -> Path:
    """Generate a 4-instance synthetic SRN car class under ``root`` and train a small srn one step."""
    from nerfstudio.scripts.train import train_loop

    from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig
    from bts_studio.data.synthetic.shapenet_cli import main as synth
    from bts_studio.methods.srn.method_config import srn_trainer_config

    out = root / "synthetic"
    synth([str(out), "--classes", "cars", "--instances", "4", "--val-instances", "1", "--test-instances", "1"]
          + ["--format", "srn", "--resolution", "32", "--train-views", "8", "--test-views", "8"])  # fmt: skip
    config = srn_trainer_config()
    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 1
    config.steps_per_eval_batch = config.steps_per_eval_image = 1000
    config.steps_per_save = 1
    config.output_dir = root / "runs"
    config.pipeline.datamanager.data = out / "srn_cars"
    config.pipeline.datamanager.dataparser = ShapeNetSRNDataParserConfig(few_shot_views=(0,))
    config.pipeline.few_shot.input_views = (0, 1)  # the 8-view test instance has no view 64 (checked at start-up)
    config.pipeline.datamanager.rays_per_instance = 64
    config.pipeline.datamanager.instances_per_batch = 2
    small = dict(latent_dim=8, phi_hidden=16, hyper_hidden=16, marcher_hidden=4, marcher_steps=3, rendering_layers=2)
    for key, value in small.items():
        setattr(config.pipeline.model, key, value)
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir() / "config.yml"


@pytest.fixture(scope="session")
def bts_run(tmp_path_factory) -> Path:
    return train_tiny_bts(tmp_path_factory.mktemp("viewer_bts"))


@pytest.fixture(scope="session")
def srn_run(tmp_path_factory) -> Path:
    return train_tiny_srn(tmp_path_factory.mktemp("viewer_srn"))
