"""The ``dvr`` method configuration and its presets (overrides of one base, classics.md C).

- ``dvr``: single-view reconstruction from RGB + masks (DVR's 2D supervision, ``ours_rgb``: decoder width 128).
- ``dvr-depth``: 2.5D supervision (``ours_depth``): depth L1 (lambda 1), occupancy only (no RGB head), width 512.
- ``dvr-combined``: RGB + depth (``ours_combined``): lambda_depth 10, 768 pixels per image, width 512.
- ``dvr-multiview``: one object fitted from many posed views with masks, no encoder (``--data`` is the object
  folder, e.g. a DTU-style scan); lambda_normal 0.1.
- ``dvr-tiny``: a CPU-sized ``dvr`` for tests and smoke runs.

Optimiser: Adam, learning rate 1e-4, for decoder and encoder together (DVR); DVR's MultiStepLR at epochs
750/1000 lies far beyond any budget here and is left out (docs/dvr.md).
"""

import dataclasses

from nerfstudio.configs.base_config import LoggingConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from bts_studio.methods.dvr.datamanager import DVRDataManagerConfig
from bts_studio.methods.dvr.model import DVRModelConfig
from bts_studio.methods.dvr.pipeline import DVRPipelineConfig
from bts_studio.utils.trainer_defaults import PLUGIN_TRAINER, PLUGIN_VIS, plugin_machine_config, plugin_viewer_config

DVR_LEARNING_RATE = 1.0e-4
"""DVR's Adam learning rate."""


def dvr_trainer_config() -> TrainerConfig:
    """The base ``dvr`` configuration (RGB + mask supervision, single view)."""
    return TrainerConfig(
        _target=PLUGIN_TRAINER,
        method_name="dvr",
        steps_per_eval_batch=500,
        steps_per_eval_image=2000,
        steps_per_eval_all_images=0,  # mesh evaluation of every eval object: run ns-eval
        steps_per_save=2000,
        max_num_iterations=1_000_000,
        mixed_precision=False,
        pipeline=DVRPipelineConfig(
            datamanager=DVRDataManagerConfig(),
            model=DVRModelConfig(hidden_size=128, depth_loss_weight=0.0),
        ),
        optimizers={"fields": {"optimizer": AdamOptimizerConfig(lr=DVR_LEARNING_RATE, eps=1e-8), "scheduler": None}},
        vis=PLUGIN_VIS,
        machine=plugin_machine_config(),
        viewer=plugin_viewer_config(),
        logging=LoggingConfig(steps_per_log=100),
    )


def _preset(name: str, **model_overrides) -> TrainerConfig:
    config = dvr_trainer_config()
    config.method_name = name
    config.pipeline.model = dataclasses.replace(config.pipeline.model, **model_overrides)
    return config


def dvr_depth_trainer_config() -> TrainerConfig:
    """``dvr-depth``: DVR's 2.5D supervision (``ours_depth``)."""
    return _preset("dvr-depth", hidden_size=512, depth_loss_weight=1.0, rgb_loss_weight=0.0, predict_colour=False)


def dvr_combined_trainer_config() -> TrainerConfig:
    """``dvr-combined``: RGB + depth (``ours_combined``)."""
    config = _preset("dvr-combined", hidden_size=512, depth_loss_weight=10.0)
    config.pipeline.datamanager = dataclasses.replace(config.pipeline.datamanager, rays_per_image=768)
    return config


def dvr_multiview_trainer_config() -> TrainerConfig:
    """``dvr-multiview``: one object from many views, no encoder (DVR's multi-view setting)."""
    config = _preset("dvr-multiview", latent_dim=0, hidden_size=512, normal_loss_weight=0.1)
    config.pipeline.datamanager = dataclasses.replace(config.pipeline.datamanager, input_image_size=0)
    return config


def dvr_tiny_trainer_config() -> TrainerConfig:
    """``dvr-tiny``: a CPU-sized ``dvr`` (small decoder and code, few pixels and proposals)."""
    config = _preset(
        "dvr-tiny", latent_dim=16, hidden_size=32, num_blocks=2, initial_proposals=8, eval_proposals=16,
        eval_num_rays_per_chunk=4096,
    )  # fmt: skip
    config.pipeline.datamanager = dataclasses.replace(
        config.pipeline.datamanager, images_per_batch=4, rays_per_image=64, input_image_size=32
    )
    config.pipeline.mesh = dataclasses.replace(config.pipeline.mesh, resolution_0=16, upsampling_steps=1)
    config.pipeline.eval_num_points = 5000
    return config


dvr_method = MethodSpecification(
    config=dvr_trainer_config(),
    description="DVR (Niemeyer et al. 2020): single-view reconstruction from RGB + masks, secant surface rendering.",
)
dvr_depth_method = MethodSpecification(
    config=dvr_depth_trainer_config(), description="DVR with 2.5D supervision (depth maps + masks)."
)
dvr_combined_method = MethodSpecification(
    config=dvr_combined_trainer_config(), description="DVR with RGB + depth supervision (ours_combined)."
)
dvr_multiview_method = MethodSpecification(
    config=dvr_multiview_trainer_config(),
    description="DVR fitted to one object from many posed views with masks (--data: the object folder).",
)
dvr_tiny_method = MethodSpecification(config=dvr_tiny_trainer_config(), description="A CPU-sized dvr for tests.")
