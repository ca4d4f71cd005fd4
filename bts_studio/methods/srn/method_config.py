"""The ``srn`` method configuration and its presets (overrides of one base).

- ``srn``: one model over all instances of a class (``ns-train srn --data <class root>``), SRN's official
  architecture, losses and learning rate (Adam 5e-5 for networks and codes; classics.md A.2).
- ``srn-single-scene``: SRN's ``--fit_single_srn``: one object, phi trained directly (point ``--data`` at
  one instance folder).
"""

import dataclasses

from nerfstudio.configs.base_config import LoggingConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from bts_studio.methods.srn.datamanager import SRNDataManagerConfig
from bts_studio.methods.srn.model import SRNModelConfig
from bts_studio.methods.srn.pipeline import SRNPipelineConfig
from bts_studio.utils.trainer_defaults import PLUGIN_TRAINER, PLUGIN_VIS, plugin_machine_config, plugin_viewer_config

SRN_LEARNING_RATE = 5.0e-5
"""SRN's single Adam learning rate (networks and latent codes)."""


def srn_trainer_config() -> TrainerConfig:
    """The base ``srn`` configuration."""
    return TrainerConfig(
        _target=PLUGIN_TRAINER,
        method_name="srn",
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        # 0 disables nerfstudio's periodic "all images" evaluation: for SRN that is the few-shot protocol,
        # which fits codes for every test instance (run it with ns-eval).
        steps_per_eval_all_images=0,
        steps_per_save=2000,
        max_num_iterations=200_000,
        mixed_precision=False,
        pipeline=SRNPipelineConfig(datamanager=SRNDataManagerConfig(), model=SRNModelConfig()),
        optimizers={
            "networks": {"optimizer": AdamOptimizerConfig(lr=SRN_LEARNING_RATE, eps=1e-8), "scheduler": None},
            "latent_codes": {"optimizer": AdamOptimizerConfig(lr=SRN_LEARNING_RATE, eps=1e-8), "scheduler": None},
        },
        vis=PLUGIN_VIS,
        machine=plugin_machine_config(),
        viewer=plugin_viewer_config(),
        logging=LoggingConfig(steps_per_log=100),
    )


def srn_single_scene_trainer_config() -> TrainerConfig:
    """``srn-single-scene``: no hypernetwork or codes; every batch holds rays of the one scene."""
    config = srn_trainer_config()
    config.method_name = "srn-single-scene"
    config.pipeline.model = dataclasses.replace(config.pipeline.model, single_scene=True)
    config.pipeline.datamanager = dataclasses.replace(
        config.pipeline.datamanager, instances_per_batch=1, rays_per_instance=16384
    )
    config.pipeline.few_shot = dataclasses.replace(config.pipeline.few_shot, shots=())
    return config


srn_method = MethodSpecification(
    config=srn_trainer_config(),
    description="Scene Representation Networks (Sitzmann et al. 2019): latent codes, hypernetwork, LSTM ray marcher.",
)

srn_single_scene_method = MethodSpecification(
    config=srn_single_scene_trainer_config(),
    description="SRN fitted to a single object (no hypernetwork): --data points at one SRN instance folder.",
)
