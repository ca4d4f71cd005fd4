"""The ``bts-density`` method configuration and its presets (overrides of one base).

- ``bts-density``: the official BTS KITTI-360 setup (``ns-train bts-density --data <KITTI-360 root>``).
- ``bts-density-tiny``: ResNet-18 at half resolution, small batches: the CPU demo and the tests.
"""

import copy

from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig
from nerfstudio.engine.schedulers import MultiStepSchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from bts_studio.data.kitti360.dataparser import Kitti360DataParserConfig
from bts_studio.methods.bts.datamanager import BTSDataManagerConfig
from bts_studio.methods.bts.model import BTSModelConfig
from bts_studio.methods.bts.pipeline import BTSPipelineConfig
from bts_studio.utils.optimizers import FusedAdamOptimizerConfig
from bts_studio.utils.trainer_defaults import PLUGIN_TRAINER, PLUGIN_VIS, plugin_machine_config, plugin_viewer_config

BTS_ITERATIONS = 153_000
"""25 epochs of BTS's KITTI-360 split (98,008 entries, batch 16)."""
BTS_LR_DROP_STEP = 120_000


def _adam(lr: float, max_steps: int, milestone: int) -> dict:
    return {
        "optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-8),
        "scheduler": MultiStepSchedulerConfig(max_steps=max_steps, gamma=0.1, milestones=(milestone,)),
    }


def bts_density_config() -> TrainerConfig:
    """The official configuration: ResNet-50, 192x640, 16 groups x 4096 rays, Adam 1e-4, x0.1 at 120k steps."""
    dataparser: DataParserConfig = Kitti360DataParserConfig()
    return TrainerConfig(
        _target=PLUGIN_TRAINER,
        method_name="bts-density",
        steps_per_eval_batch=500,
        steps_per_eval_image=2000,
        # 0 disables nerfstudio's periodic full evaluation during training; run ns-eval instead.
        steps_per_eval_all_images=0,
        steps_per_save=2000,
        max_num_iterations=BTS_ITERATIONS,
        mixed_precision=False,
        pipeline=BTSPipelineConfig(
            datamanager=BTSDataManagerConfig(dataparser=dataparser),
            model=BTSModelConfig(),
        ),
        optimizers={
            "encoder": _adam(1e-4, BTS_ITERATIONS, BTS_LR_DROP_STEP),
            "density_mlp": _adam(1e-4, BTS_ITERATIONS, BTS_LR_DROP_STEP),
            # Used only with --pipeline.model.decoder-param-group True (the decoder's own group, issue 18);
            # otherwise the decoder trains in "encoder".
            "decoder": _adam(1e-4, BTS_ITERATIONS, BTS_LR_DROP_STEP),
        },
        vis=PLUGIN_VIS,
        machine=plugin_machine_config(),
        viewer=plugin_viewer_config(),
    )


def bts_density_tiny_config() -> TrainerConfig:
    """CPU demo preset: ResNet-18 at half resolution (96x320), 32 feature channels (BTS's RealEstate10K width),
    32 samples per ray, 2 groups x 512 rays, 500 steps. About 0.9 s of CPU time per step on one core."""
    config = copy.deepcopy(bts_density_config())
    config.method_name = "bts-density-tiny"
    config.max_num_iterations = 500
    config.steps_per_eval_batch = 100
    config.steps_per_eval_image = 250
    config.steps_per_save = 250
    dataparser = config.pipeline.datamanager.dataparser
    assert isinstance(dataparser, Kitti360DataParserConfig)
    dataparser.target_height, dataparser.target_width = 96, 320
    config.pipeline.datamanager.groups_per_batch = 2
    config.pipeline.datamanager.rays_per_group = 512
    config.pipeline.datamanager.num_workers = 2
    config.pipeline.model.resnet_layers = 18
    config.pipeline.model.feature_dim = 32
    config.pipeline.model.num_samples = 32
    config.pipeline.model.eval_num_rays_per_chunk = 8192
    for name in ("encoder", "density_mlp", "decoder"):
        config.optimizers[name] = _adam(1e-4, config.max_num_iterations, BTS_LR_DROP_STEP)
    return config


bts_density_method = MethodSpecification(
    config=bts_density_config(),
    description="Behind the Scenes (CVPR 2023): single-view density field, official KITTI-360 setup.",
)
bts_density_tiny_method = MethodSpecification(
    config=bts_density_tiny_config(),
    description="bts-density with ResNet-18 at 96x320, 32 features, 32 samples and small batches (CPU demo).",
)
