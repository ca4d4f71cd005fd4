"""SRN's pipeline: nerfstudio's VanillaPipeline whose image evaluation is SRN's few-shot protocol.

``ns-eval`` calls ``get_average_eval_image_metrics``; here that fits new latent codes to the conditioning
views of every test instance and scores the other views (``evaluation.py``), plus the held-out views of
training instances. Everything else (training steps, the viewer, ns-render) is the vanilla pipeline.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from bts_studio.methods.srn.datamanager import SRNDataManager, SRNDataManagerConfig
from bts_studio.methods.srn.evaluation import check_few_shot_settings, evaluate_srn
from bts_studio.methods.srn.few_shot import FewShotConfig
from bts_studio.methods.srn.model import SRNModel, SRNModelConfig
from bts_studio.utils.errors import refuse_unsupported_export


@dataclass
class SRNPipelineConfig(VanillaPipelineConfig):
    """SRN training plus its few-shot evaluation protocol."""

    _target: Type = field(default_factory=lambda: SRNPipeline)
    """The pipeline class this config builds."""
    datamanager: SRNDataManagerConfig = field(default_factory=SRNDataManagerConfig)
    """Instance-grouped ray batches."""
    model: SRNModelConfig = field(default_factory=SRNModelConfig)
    """The SRN model."""
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    """How ns-eval reconstructs and scores test instances."""
    max_train_seconds: float = 0.0
    """Stop training after this many seconds of training steps (0: no limit); the final checkpoint is saved
    as usual. For benchmarks with a time budget; ``--max-num-iterations`` still caps the steps."""


class SRNPipeline(VanillaPipeline):
    """VanillaPipeline with SRN's evaluation protocol."""

    config: SRNPipelineConfig

    def __init__(
        self, config: SRNPipelineConfig, device: str, test_mode="val", world_size=1, local_rank=0, grad_scaler=None
    ):
        refuse_unsupported_export("srn")
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        if test_mode in ("val", "test"):  # ns-train / ns-eval; renders ("inference") evaluate nothing
            assert isinstance(self.datamanager, SRNDataManager)
            check_few_shot_settings(self.datamanager, config.few_shot, test_mode)

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

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attributes)
        trainer = attributes.trainer
        if self.config.max_train_seconds > 0 and trainer is not None:
            callbacks.append(
                TrainingCallback(
                    [TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                    TimeBudget(self.config.max_train_seconds, trainer),
                )
            )
        return callbacks


class TimeBudget:
    """Training callback that asks nerfstudio's trainer to stop once ``seconds`` have passed since step one."""

    def __init__(self, seconds: float, trainer) -> None:
        self.seconds = seconds
        self.trainer = trainer
        self.start: Optional[float] = None

    def __call__(self, step: int) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        elif now - self.start >= self.seconds and not self.trainer.stop_training:
            CONSOLE.print(f"srn: training time budget of {self.seconds:.0f} s reached after step {step}; stopping")
            # Trainer.train checks this flag before every step, then saves the final checkpoint.
            self.trainer.stop_training = True
