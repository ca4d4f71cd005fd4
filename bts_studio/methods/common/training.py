"""Training helpers every method's pipeline shares: the wall-clock time budget.

:class:`BudgetedPipelineConfig` adds ``max_train_seconds`` to nerfstudio's ``VanillaPipelineConfig``;
:class:`BudgetedPipeline` registers :class:`TimeBudget` as an after-iteration callback when it is set. A method's
pipeline subclasses both instead of writing its own field and callback.
"""

from dataclasses import dataclass, field
from time import perf_counter
from typing import List, Optional, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

__all__ = ["BudgetedPipeline", "BudgetedPipelineConfig", "TimeBudget"]


class TimeBudget:
    """Training callback that asks nerfstudio's trainer to stop once ``seconds`` have passed since the first step.

    The clock starts at the first call (after step 0), so setup and data caching do not count.
    """

    def __init__(self, seconds: float, trainer, method: str = "training") -> None:
        self.seconds = seconds
        self.trainer = trainer
        self.method = method
        self.start: Optional[float] = None

    def __call__(self, step: int) -> None:
        now = perf_counter()
        if self.start is None:
            self.start = now
        elif now - self.start >= self.seconds and not self.trainer.stop_training:
            CONSOLE.print(
                f"{self.method}: training time budget of {self.seconds:.0f} s reached after step {step}; stopping"
            )
            # Trainer.train checks this flag before every step, then saves the final checkpoint as usual.
            self.trainer.stop_training = True


@dataclass
class BudgetedPipelineConfig(VanillaPipelineConfig):
    """nerfstudio's VanillaPipelineConfig plus a wall-clock training budget."""

    _target: Type = field(default_factory=lambda: BudgetedPipeline)
    """The pipeline class this config builds."""
    max_train_seconds: float = 0.0
    """Stop training after this many seconds of training steps (0: no limit); the final checkpoint is saved as
    usual. For benchmarks with a time budget; --max-num-iterations still caps the steps."""


class BudgetedPipeline(VanillaPipeline):
    """VanillaPipeline that stops training when ``config.max_train_seconds`` have passed."""

    config: BudgetedPipelineConfig

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attributes)
        if self.config.max_train_seconds > 0 and attributes.trainer is not None:
            method = getattr(attributes.trainer.config, "method_name", None) or "training"
            budget = TimeBudget(self.config.max_train_seconds, attributes.trainer, method)
            callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], budget))
        return callbacks
