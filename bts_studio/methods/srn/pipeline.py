"""SRN's pipeline: nerfstudio's VanillaPipeline whose image evaluation is SRN's few-shot protocol.

``ns-eval`` calls ``get_average_eval_image_metrics``; here that fits new latent codes to the conditioning
views of every test instance and scores the other views (``evaluation.py``), plus the held-out views of
training instances. Everything else (training steps, the viewer, ns-render) is the vanilla pipeline.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Type

from bts_studio.eval import ns_render_paths
from bts_studio.methods.common.source_selector import SCENE_KINDS, SourceSelector
from bts_studio.methods.common.training import BudgetedPipeline, BudgetedPipelineConfig
from bts_studio.methods.common.viewer_controls import FIXED
from bts_studio.methods.srn.datamanager import SRNDataManager, SRNDataManagerConfig
from bts_studio.methods.srn.evaluation import check_few_shot_settings, evaluate_srn
from bts_studio.methods.srn.few_shot import FewShotConfig
from bts_studio.methods.srn.model import SRNModel, SRNModelConfig
from bts_studio.utils.errors import refuse_unsupported_export


@dataclass
class SRNPipelineConfig(BudgetedPipelineConfig):
    """SRN training plus its few-shot evaluation protocol."""

    _target: Type = field(default_factory=lambda: SRNPipeline)
    """The pipeline class this config builds."""
    datamanager: SRNDataManagerConfig = field(default_factory=SRNDataManagerConfig)
    """Instance-grouped ray batches."""
    model: SRNModelConfig = field(default_factory=SRNModelConfig)
    """The SRN model."""
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    """How ns-eval reconstructs and scores test instances."""


class SRNPipeline(BudgetedPipeline):
    """BudgetedPipeline (VanillaPipeline + time budget) with SRN's evaluation protocol."""

    config: SRNPipelineConfig

    def __init__(self, config: SRNPipelineConfig, device, test_mode="val", world_size=1, local_rank=0, **kwargs):
        refuse_unsupported_export("srn")
        super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)
        if test_mode in ("val", "test"):  # ns-train / ns-eval; renders ("inference") evaluate nothing
            assert isinstance(self.datamanager, SRNDataManager)
            check_few_shot_settings(self.datamanager, config.few_shot, test_mode)
        ns_render_paths.install(self.scene_kind)  # only inside ns-render: paths that fit objects
        model = self.model
        if isinstance(model, SRNModel) and not model.config.single_scene and model.image_instance_idx.numel():
            # An srn source is an object instance (its latent code), reached through one of its training images.
            # The nearest-view rule would swap objects as the camera orbits, so renders that name no source use
            # the default instance, and the viewer starts on a fixed image of it.
            owned = (model.image_instance_idx == model.config.default_instance).nonzero()
            first = int(owned[0, 0]) if len(owned) else 0
            model.source_selector = SourceSelector(
                "srn",
                {"train": self.datamanager.train_dataset},
                nearest=False,
                default_index=first,
                default_rule=FIXED,
                **SCENE_KINDS["object"],
            )
            self.source_image = model.source_selector.controls  # the viewer's "source_image" folder

    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ) -> Dict:
        """Few-shot PSNR/SSIM on test instances and held-out views of training instances (``evaluation.py``).

        Standard deviations are always reported (over images). During training (``step`` given) only
        scalars are returned, for the loggers; ns-eval also gets per-instance tables and the protocol.
        """
        datamanager = self.datamanager
        model = self.model
        assert isinstance(datamanager, SRNDataManager) and isinstance(model, SRNModel)
        self.eval()
        try:
            return evaluate_srn(datamanager, model, self.config.few_shot, output_path, scalars_only=step is not None)
        finally:
            self.train()
