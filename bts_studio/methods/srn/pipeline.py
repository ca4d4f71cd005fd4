"""SRN's pipeline: nerfstudio's VanillaPipeline whose image evaluation is SRN's few-shot protocol.

``ns-eval`` calls ``get_average_eval_image_metrics``; here that fits new latent codes to the conditioning
views of every test instance and scores the other views (``evaluation.py``), plus the held-out views of
training instances. Everything else (training steps, the viewer, ns-render) is the vanilla pipeline.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Type

from bts_studio.methods.common.training import BudgetedPipeline, BudgetedPipelineConfig
from bts_studio.methods.srn.datamanager import SRNDataManager, SRNDataManagerConfig
from bts_studio.methods.srn.evaluation import evaluate_srn
from bts_studio.methods.srn.few_shot import FewShotConfig
from bts_studio.methods.srn.model import SRNModel, SRNModelConfig


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
