"""The bts-density pipeline: passes frame-group batches to the model and evaluates per test frame group.

Training: ``datamanager.next_train`` -> ``model(batch)`` (a ``BTSBatch``; encodes the G input images, then
renders) -> losses. The model's cached source encodings are dropped every step.

Evaluation (``ns-eval``, and the image evaluation during training), per test frame group:
    * encode the input image (column 0) and render its own view: KITTI depth metrics of the rendered z-depth
      against the lidar depth map (``core.depth_metrics``: 80 m cap, no median scaling);
    * render the stereo partner's view (column 2) with colours from the input image only, as BTS's novel-view
      evaluation: ``psnr`` / ``ssim`` (scikit-image definitions, 5% border crop).
Averages are per-image means; images without a value are skipped, and ``*_std`` are population standard
deviations, so the JSON never holds NaN.
"""

import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from time import perf_counter
from typing import Dict, List, Optional, Tuple, Type, Union

import torch
import torchvision.utils as vutils
from nerfstudio.utils import comms
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bts_studio.core.depth_metrics import DEPTH_METRIC_NAMES, average_metrics
from bts_studio.eval import ns_render_paths
from bts_studio.methods.bts.datamanager import BTSDataManager, BTSDataManagerConfig
from bts_studio.methods.bts.model import BTSModelConfig
from bts_studio.methods.bts.sources import SourceBank
from bts_studio.methods.common.training import BudgetedPipeline, BudgetedPipelineConfig
from bts_studio.utils.errors import refuse_unsupported_export

STEREO_PARTNER_COLUMN = 2


@dataclass
class BTSPipelineConfig(BudgetedPipelineConfig):
    """Pipeline of bts-density."""

    _target: Type = field(default_factory=lambda: BTSPipeline)
    datamanager: BTSDataManagerConfig = field(default_factory=BTSDataManagerConfig)
    """Frame-group datamanager."""
    model: BTSModelConfig = field(default_factory=BTSModelConfig)
    """The BTS density-field model."""
    max_eval_groups: Optional[int] = None
    """Evaluate at most this many test frame groups in ns-eval (evenly spread); None: all."""
    train_log_csv: Optional[Path] = None
    """Append step, seconds and the losses to this CSV every train_log_every steps (the training curve); with
    several GPUs rank 0 writes the mean over the ranks (the global batch's losses)."""
    train_log_every: int = 10
    """Steps between rows of train_log_csv."""


class BTSPipeline(BudgetedPipeline):
    """BudgetedPipeline (VanillaPipeline + time budget) plus source-image plumbing and BTS's per-group evaluation."""

    config: BTSPipelineConfig
    datamanager: BTSDataManager
    scene_kind = "street"

    def __init__(
        self,
        config: BTSPipelineConfig,
        device: Union[str, torch.device],
        test_mode="val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler=None,
    ):
        refuse_unsupported_export("bts-density")
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.model.attach_source_bank(
            SourceBank({"train": self.datamanager.train_dataset, "test": self.datamanager.eval_dataset})
        )
        self.source_image = self.model.source_selector.controls  # the viewer's "source_image" folder
        ns_render_paths.install(self.scene_kind)  # only inside ns-render: paths that fit street scenes

    # ---------------------------------------------------------------------------------------------- training
    def get_train_loss_dict(self, step: int):
        self.model.forget_sources()  # the weights change every step
        _, batch = self.datamanager.next_train(step)
        outputs = self._model(batch)  # the model encodes the batch's input frames inside forward (DDP)
        metrics_dict = self.model.get_metrics_dict(outputs, batch)
        loss_dict = self.model.get_loss_dict(outputs, batch, metrics_dict)
        log_now = self.config.train_log_csv is not None and step % max(1, self.config.train_log_every) == 0
        if log_now:
            scalars = {k: v for k, v in {**loss_dict, **metrics_dict}.items() if torch.as_tensor(v).numel() == 1}
            # Under DDP the CSV holds the global batch's mean, as one process would log: the means travel in the
            # step's one agreed all-reduce (with the stop flags), and the row is written when it is resolved.
            self.step_agreement.add_means(step, scalars, then=self._write_curve)
        return outputs, loss_dict, metrics_dict

    def _write_curve(self, step: int, means: Dict[str, torch.Tensor]) -> None:
        if comms.is_main_process():
            self._curve.write(step, means)

    @cached_property
    def _curve(self) -> "TrainingCurve":
        assert self.config.train_log_csv is not None
        return TrainingCurve(Path(self.config.train_log_csv))

    def get_eval_loss_dict(self, step: int):
        self.eval()
        with torch.no_grad():
            _, batch = self.datamanager.next_eval(step)
            outputs = self.model(batch)
            metrics_dict = self.model.get_metrics_dict(outputs, batch)
            loss_dict = self.model.get_loss_dict(outputs, batch, metrics_dict)
        self.train()
        return outputs, loss_dict, metrics_dict

    def load_pipeline(self, loaded_state, step: int) -> None:
        super().load_pipeline(loaded_state, step)
        self.model.forget_sources()

    # -------------------------------------------------------------------------------------------- evaluation
    def eval_groups(self) -> torch.Tensor:
        """Test frame groups with an input frame, in dataset order."""
        groups = BTSDataManager.frame_groups(self.datamanager.eval_dataset)
        return groups[groups[:, 0] >= 0]

    @torch.no_grad()
    def evaluate_group(self, group: torch.Tensor) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        """Depth metrics of the input view and novel-view PSNR/SSIM of the stereo partner, for one test group."""
        dataset = self.datamanager.eval_dataset
        cameras = dataset.cameras.to(self.device)
        input_index, partner_index = int(group[0]), int(group[STEREO_PARTNER_COLUMN])
        source = self.model.source_view("test", input_index)
        outputs = self.model.render_camera(cameras[input_index : input_index + 1], source)
        input_metrics, images = self.model.get_image_metrics_and_images(outputs, dataset[input_index])
        metrics = {name: input_metrics[name] for name in DEPTH_METRIC_NAMES if name in input_metrics}
        if partner_index >= 0:
            novel = self.model.render_camera(cameras[partner_index : partner_index + 1], source)
            novel_metrics, novel_images = self.model.get_image_metrics_and_images(novel, dataset[partner_index])
            metrics["psnr"], metrics["ssim"] = novel_metrics["psnr"], novel_metrics["ssim"]
            images["novel_view"] = novel_images["img"]
            images["novel_view_depth"] = novel_images["depth"]
        return metrics, images

    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        groups = self.eval_groups()
        metrics, images = self.evaluate_group(groups[random.randrange(len(groups))])
        camera = self.datamanager.eval_dataset.cameras[0]
        metrics["num_rays"] = int(camera.height) * int(camera.width)
        self.train()
        return metrics, images

    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ):
        self.eval()
        groups = self.eval_groups()
        if self.config.max_eval_groups is not None and len(groups) > self.config.max_eval_groups:
            keep = torch.linspace(0, len(groups) - 1, self.config.max_eval_groups).round().long()
            groups = groups[keep]
        if output_path is not None:
            output_path.mkdir(parents=True, exist_ok=True)
        per_image: List[Dict[str, float]] = []
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            MofNCompleteColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("[green]Evaluating test frame groups...", total=len(groups))
            for index, group in enumerate(groups):
                start = perf_counter()
                self.model.forget_sources()  # time the encoder too
                metrics, images = self.evaluate_group(group)
                camera = self.datamanager.eval_dataset.cameras[int(group[0])]
                num_rays = int(camera.height) * int(camera.width) * (2 if group[STEREO_PARTNER_COLUMN] >= 0 else 1)
                metrics["num_rays_per_sec"] = num_rays / max(perf_counter() - start, 1e-9)
                metrics["fps"] = metrics["num_rays_per_sec"] / (int(camera.height) * int(camera.width))
                per_image.append(metrics)
                if output_path is not None:
                    for key, image in images.items():
                        vutils.save_image(image.permute(2, 0, 1).cpu(), output_path / f"eval_{key}_{index:04d}.png")
                progress.advance(task)
        self.train()
        return average_metrics(per_image, with_std=get_std)


class TrainingCurve:
    """Appends ``step,seconds,<loss and metric names>`` rows to a CSV (header on the first row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = perf_counter()
        self.columns: Optional[List[str]] = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, values: Dict[str, torch.Tensor]) -> None:
        scalars = {name: float(value) for name, value in values.items() if torch.as_tensor(value).numel() == 1}
        scalars["loss"] = sum(float(v) for k, v in values.items() if k.endswith("_loss"))
        if self.columns is None:
            self.columns = sorted(scalars)
            self.path.write_text(",".join(["step", "seconds", *self.columns]) + "\n")
        row = [
            str(step),
            f"{perf_counter() - self.start:.3f}",
            *(f"{scalars.get(c, float('nan')):.6g}" for c in self.columns),
        ]
        with self.path.open("a") as stream:
            stream.write(",".join(row) + "\n")
