"""The ``deepvoxels`` method configuration and its CPU preset (overrides of one base).

- ``deepvoxels``: the official architecture and training (32^3 x 64 grid, 64 px feature map and frustum, 512 px
  images, 200 L1 + 1 PatchGAN, Adam 4e-4 for generator and discriminator; classics.md B).
- ``deepvoxels-tiny``: the same networks at CPU size (8^3 x 8 grid, 8 px feature map, narrow U-Nets), for tests
  and smoke runs on small generated scenes (``bts-studio synth-deepvoxels OUT --resolution 32``).
"""

import dataclasses

from nerfstudio.configs.base_config import LoggingConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from bts_studio.methods.deepvoxels.datamanager import DeepVoxelsDataManagerConfig
from bts_studio.methods.deepvoxels.model import DeepVoxelsModelConfig
from bts_studio.methods.deepvoxels.pipeline import DeepVoxelsPipelineConfig
from bts_studio.utils.trainer_defaults import PLUGIN_TRAINER, PLUGIN_VIS, plugin_machine_config, plugin_viewer_config

DEEPVOXELS_LEARNING_RATE = 4.0e-4
"""Adam learning rate of the generator and of the discriminator (``run_deepvoxels.py``)."""


def deepvoxels_trainer_config() -> TrainerConfig:
    """The base ``deepvoxels`` configuration."""
    return TrainerConfig(
        _target=PLUGIN_TRAINER,
        method_name="deepvoxels",
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        # 0 disables nerfstudio's periodic "all images" evaluation (1000 test views); run ns-eval instead.
        steps_per_eval_all_images=0,
        steps_per_save=10_000,
        max_num_iterations=200_000,
        mixed_precision=False,
        pipeline=DeepVoxelsPipelineConfig(datamanager=DeepVoxelsDataManagerConfig(), model=DeepVoxelsModelConfig()),
        optimizers={
            "deepvoxels": {"optimizer": AdamOptimizerConfig(lr=DEEPVOXELS_LEARNING_RATE, eps=1e-8), "scheduler": None},
            "discriminator": {
                "optimizer": AdamOptimizerConfig(lr=DEEPVOXELS_LEARNING_RATE, eps=1e-8),
                "scheduler": None,
            },
        },
        vis=PLUGIN_VIS,
        machine=plugin_machine_config(),
        viewer=plugin_viewer_config(),
        logging=LoggingConfig(steps_per_log=100),
    )


def deepvoxels_tiny_trainer_config() -> TrainerConfig:
    """``deepvoxels-tiny``: an 8^3 grid and narrow networks for CPU tests on 32 px scenes."""
    config = deepvoxels_trainer_config()
    config.method_name = "deepvoxels-tiny"
    config.pipeline.model = dataclasses.replace(
        config.pipeline.model,
        grid_dim=8,
        num_grid_feats=8,
        nf0=4,
        feature_side=8,
        feature_unet_nf0=8,
        max_channels=16,
        downsampling_nf0=4,
        occlusion_nf=2,
        discriminator_ndf=4,
        loss_border=1,
        eval_crop=1,
    )
    config.steps_per_eval_batch = 50
    config.steps_per_eval_image = 100
    config.steps_per_save = 500
    config.max_num_iterations = 2000
    return config


deepvoxels_method = MethodSpecification(
    config=deepvoxels_trainer_config(),
    description="DeepVoxels (Sitzmann et al. 2019): a persistent 3D feature grid with occlusion-aware projection.",
)

deepvoxels_tiny_method = MethodSpecification(
    config=deepvoxels_tiny_trainer_config(),
    description="DeepVoxels at CPU size (8^3 grid, 8 px features) for tests and smoke runs on 32 px scenes.",
)
