"""Training helpers every method's pipeline shares: the wall-clock time budget and the DDP wrapping.

:class:`BudgetedPipelineConfig` adds ``max_train_seconds`` and ``find_unused_parameters`` to nerfstudio's
``VanillaPipelineConfig``; :class:`BudgetedPipeline` registers :class:`TimeBudget` as an after-iteration callback
when a budget is set, and wraps the model in DDP itself when nerfstudio's launcher runs several processes
(``methods/common/distributed.py``, ``docs/multi_gpu.md``). A method's pipeline subclasses both instead of writing
its own field and callback.
"""

from dataclasses import dataclass, field
from time import perf_counter
from typing import ClassVar, List, Optional, Type, Union

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from bts_studio.methods.common.distributed import StepAgreement, wrap_ddp

__all__ = ["BudgetedPipeline", "BudgetedPipelineConfig", "TimeBudget"]


class TimeBudget:
    """Training callback that asks nerfstudio's trainer to stop once ``seconds`` have passed since the first step.

    The clock starts at the first reading (after step 0), so setup and data caching do not count. The decision is
    a flag of the pipeline's :class:`StepAgreement` (read from the clock when the step is resolved, after its
    optimizer step): under DDP it travels in the step's one small all-reduce with the other agreed values (any rank
    over budget stops all), so every rank stops after the same step without a collective of its own.
    """

    FLAG = "over_time_budget"

    def __init__(
        self, seconds: float, trainer, method: str = "training", agreement: Optional[StepAgreement] = None
    ) -> None:
        self.seconds = seconds
        self.trainer = trainer
        self.method = method
        self.start: Optional[float] = None
        self.agreement = agreement if agreement is not None else StepAgreement()
        self.agreement.flag_providers[self.FLAG] = self.over_budget

    def over_budget(self) -> bool:
        """This process's clock: True once ``seconds`` have passed since the first reading."""
        now = perf_counter()
        if self.start is None:
            self.start = now
        return now - self.start >= self.seconds

    def __call__(self, step: int) -> None:
        _, flags = self.agreement.resolve(step)  # already resolved by BTSStudioTrainer.train_iteration: no cost
        if flags[self.FLAG] and not self.trainer.stop_training:
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
    find_unused_parameters: bool = True
    """Multi-GPU (DDP) only: let a step leave trainable parameters without a gradient (nerfstudio's default; a
    graph traversal per step). False is faster when every trainable parameter gets a gradient every step; if one
    does not, DDP stops with an error at the next step."""
    sync_batch_norm: bool = False
    """Multi-GPU (DDP) only: batch-norm statistics over the global batch (torch SyncBatchNorm, CUDA only) instead
    of per GPU. Off by default (DDP's usual per-GPU statistics; BTS's code has no sync); on, N GPUs at B each
    normalise as one GPU at N x B, at the cost of an all-reduce per batch-norm layer."""
    draw_ahead: bool = True
    """Draw step N+1's training batch while step N runs on the GPU (on a side CUDA stream), before the step's one
    host sync, so the batch draw's host work overlaps the GPU work. Only for datamanagers whose batch depends only
    on the step (``draws_depend_only_on_step``; today bts-density; others keep nerfstudio's order): the batches are
    identical either way, and so are the losses on the CPU. On an H200 it made bts-density's ``ns-train`` step
    92.1 ms instead of 106.8 ms (docs/benchmarks.md, issue 17). False draws each batch at the start of its step
    (nerfstudio's order)."""


class BudgetedPipeline(VanillaPipeline):
    """VanillaPipeline that stops training when ``config.max_train_seconds`` have passed."""

    config: BudgetedPipelineConfig
    scene_kind: ClassVar[str] = "object"
    """``street`` or ``object`` (``ns_render_paths.PATH_SCALES``): what size the ns-render paths and
    ``bts-studio camera-path``'s default path are made for; object-centred methods keep the object at the origin."""

    def __init__(
        self,
        config: BudgetedPipelineConfig,
        device: Union[str, torch.device],
        test_mode="val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler=None,
    ):
        # VanillaPipeline would wrap the model with device_ids=[local_rank] (CUDA only) and always search for unused
        # parameters; it is built as for one process and wrapped here instead. The datamanagers read their rank
        # from torch.distributed, not from the world_size argument.
        super().__init__(config, device, test_mode, world_size=1, local_rank=local_rank, grad_scaler=grad_scaler)
        self.world_size = world_size
        # What the ranks agree on after each step, in one collective (the trainer resolves it; see TimeBudget).
        self.step_agreement = StepAgreement()
        if world_size > 1:
            if config.sync_batch_norm:
                if torch.device(device).type != "cuda":
                    raise ValueError("--pipeline.sync-batch-norm True needs CUDA devices (torch's SyncBatchNorm)")
                self._model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self._model)
            self._model = wrap_ddp(self._model, device, config.find_unused_parameters)

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attributes)
        if self.config.max_train_seconds > 0 and attributes.trainer is not None:
            method = getattr(attributes.trainer.config, "method_name", None) or "training"
            budget = TimeBudget(self.config.max_train_seconds, attributes.trainer, method, self.step_agreement)
            callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], budget))
        return callbacks
